// Chunked snapshots (interest management): the JavaScript twin of proto/chunks.py.
//
// Theory of operation
// -------------------
// In a room with interest management (Welcome.interest present) a snapshot of tick T
// carries no payload: it carries chunks, one per grid cell sent to us, and a personal
// part (proto/README.md, "Chunked snapshots", is the byte-level spec). A delta chunk
// describes one cell against the SAME cell's chunk in our snapshot b = T - elapsed: we
// kept that chunk's member list, so each previous member costs a 2-bit op (unchanged /
// updated / a new entity in that slot / left the cell), then the members added since are
// named by slot, each with its own op (0/1 from its record at b, 2 whole), with the spawn
// and residual sections of the payload codec (codec.js). An added member with op 0/1 whose
// slot OUR snapshot b did not carry is skipped (its residuals are read, it yields nothing:
// the server sends that entity whole in the personal part), but it is still a member of
// the cell. A keyframe chunk has no previous members and spawns every member. The
// personal part says which slots LEFT our interest (fade them out) and which are GONE from
// the world (remove at once), and whether to reset.
//
// `ChunkMirror` is the client's view: slot -> (record, as_of tick), and, for the newest
// `keep` snapshots, the records each one carried and its chunks' member lists (cell ->
// members: the baselines of later chunks). Records not carried by a snapshot keep their
// older `as_of` (the budget sends far cells less often); `wordsAt(T)` dead-reckons every record of the view to tick T, which is what the
// rest of the client (interpolation, events, shots) consumes, as a dense snapshot.
// Any malformed input rejects the whole snapshot with CodecError and clears the mirror,
// which then acks 0 and waits for a snapshot with the reset flag.

import { CodecError, WORDS, W_KIND_GEN, FLAG_KEYFRAME, FLAG_DEFLATE, OP_SPAWN,
         OP_UNCHANGED, OP_UPDATE,
         inflate, readSpawns, applyUpdates, predictInPlace, units } from "./codec.js";

export const PERSONAL_RESET = 0x01;
const CHUNK_HEADER_BYTES = 8; // cell:u32 elapsed:u16 nprev:u16

function reader(body) {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  return {
    dv,
    at: 0,
    need(n, what) {
      if (this.at + n > body.length) {
        throw new CodecError(`truncated ${what}: wanted ${n} bytes, ${body.length - this.at} left`);
      }
    },
    slots(n, what) {
      this.need(2 * n, what);
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = dv.getUint16(this.at + 2 * i, true);
      this.at += 2 * n;
      for (let i = 1; i < n; i++) {
        if (out[i] <= out[i - 1]) throw new CodecError(`${what} slots are not strictly ascending`);
      }
      return out;
    },
  };
}

/** A chunk's flags and (inflated) body. Resolves to {flags, body}. */
async function chunkBody(chunk) {
  if (!(chunk instanceof Uint8Array) || chunk.length < 1) throw new CodecError("empty chunk");
  const flags = chunk[0];
  if (flags & ~(FLAG_KEYFRAME | FLAG_DEFLATE)) {
    throw new CodecError(`unknown flag bits 0x${flags.toString(16).padStart(2, "0")}`);
  }
  let body = chunk.subarray(1);
  if (flags & FLAG_DEFLATE) body = await inflate(body);
  return { flags, body };
}

/** The records a snapshot carried: ascending `slots` and their words (slots.length * 8). */
export class Carried {
  constructor(slots, words) {
    this.slots = slots;
    this.words = words;
    this.index = new Map();
    for (let i = 0; i < slots.length; i++) this.index.set(slots[i], i);
  }
}

/**
 * What we keep of one applied snapshot: the records it carried, and each decoded chunk's
 * members (`cells`: Map cell -> ascending Uint16Array of slots, skipped members included),
 * which the next delta chunk of that cell is written against.
 */
export class Kept {
  constructor(carried, cells) {
    this.carried = carried;
    this.cells = cells;
  }
}

/** `n` 2-bit ops packed from `at` (member i in bits 2*(i%4) of byte i>>2); bits past n must be 0. */
function readOps(body, r, n) {
  const nBytes = (n + 3) >> 2;
  r.need(nBytes, "chunk");
  const ops = new Uint8Array(n);
  for (let i = 0; i < nBytes * 4; i++) {
    const op = (body[r.at + (i >> 2)] >> (2 * (i & 3))) & 3;
    if (i < n) ops[i] = op;
    else if (op) throw new CodecError("ops beyond the span are not zero");
  }
  r.at += nBytes;
  return ops;
}

const OP_LEFT = 3; // a previous member that is no longer in the cell

/**
 * Decode an inflated chunk body of snapshot `tick` (flags given apart). `kept`: Map tick ->
 * Kept. Returns {cell, baselineTick, members, slots, words, skipped}: the cell's members now
 * (ascending, skipped ones included), the members we could decode (ascending slots) and
 * their records, and how many added members were skipped (our snapshot b did not carry
 * them; the personal part sends them whole). Throws CodecError.
 */
export function decodeChunkBody(flags, body, tick, rate, kept, posScale = units.pos) {
  const keyframe = (flags & FLAG_KEYFRAME) !== 0;
  const r = reader(body);
  r.need(CHUNK_HEADER_BYTES, "chunk");
  const cell = r.dv.getUint32(0, true), elapsed = r.dv.getUint16(4, true);
  const nPrev = r.dv.getUint16(6, true);
  r.at = CHUNK_HEADER_BYTES;
  if (keyframe !== (elapsed === 0)) throw new CodecError("a chunk's elapsed is 0 exactly when it is a keyframe");
  if (keyframe && nPrev) throw new CodecError("keyframe chunk with previous members");
  const prevOps = readOps(body, r, nPrev);
  r.need(2, "chunk");
  const nAdd = r.dv.getUint16(r.at, true);
  r.at += 2;
  const added = r.slots(nAdd, "added");
  const addOps = readOps(body, r, nAdd);
  for (let i = 0; i < nAdd; i++) {
    if (addOps[i] === OP_LEFT) throw new CodecError("op 3 for an added member");
    if (keyframe && addOps[i] !== OP_SPAWN) throw new CodecError("keyframe chunk with a non-spawn op");
  }
  let baselineTick = 0;
  let prev = new Uint16Array(0);
  let carried = null;
  if (!keyframe) {
    baselineTick = tick - elapsed;
    const keptB = kept.get(baselineTick);
    if (!keptB) throw new CodecError(`chunk baseline ${baselineTick} is not kept`);
    prev = keptB.cells.get(cell);
    if (!prev) throw new CodecError(`cell ${cell} was not in snapshot ${baselineTick}`);
    if (prev.length !== nPrev) {
      throw new CodecError(`cell ${cell} had ${prev.length} members at ${baselineTick}, not ${nPrev}`);
    }
    const wasMember = new Set(prev);
    for (const s of added) if (wasMember.has(s)) throw new CodecError("an added member was already a member");
    carried = keptB.carried;
  }
  // Rows: the previous members, then the added ones.
  const n = nPrev + nAdd;
  const rows = new Uint16Array(n), ops = new Uint8Array(n);
  rows.set(prev);
  rows.set(added, nPrev);
  ops.set(prevOps);
  ops.set(addOps, nPrev);
  const out = new Uint16Array(n * WORDS);
  const usable = new Uint8Array(n); // op 0/1 rows whose baseline record snapshot b carried
  if (carried) {
    for (let i = 0; i < n; i++) {
      if (ops[i] !== OP_UNCHANGED && ops[i] !== OP_UPDATE) continue;
      const j = carried.index.get(rows[i]);
      if (j === undefined) {
        if (i < nPrev) throw new CodecError("a previous member's record is not in its baseline snapshot");
        continue; // an added member snapshot b did not carry: skipped (read, not yielded)
      }
      usable[i] = 1;
      out.set(carried.words.subarray(j * WORDS, j * WORDS + WORDS), i * WORDS);
    }
    predictInPlace(out, elapsed, rate, posScale);
  }
  const spawnRows = [], updRows = [];
  for (let i = 0; i < n; i++) {
    if (ops[i] === OP_SPAWN) spawnRows.push(i);
    else if (ops[i] === OP_UPDATE) updRows.push(i);
  }
  r.at = readSpawns(body, r.dv, r.at, out, spawnRows);
  r.at = applyUpdates(body, r.dv, r.at, out, updRows);
  if (r.at !== body.length) throw new CodecError(`${body.length - r.at} trailing bytes`);
  // Members now: previous ones whose op is not 3, plus every added one; of those, the ones
  // we decoded (spawns and usable op 0/1 rows). Both ascending.
  const memberRows = [], yieldRows = [];
  for (let i = 0; i < n; i++) {
    if (i < nPrev && ops[i] === OP_LEFT) continue;
    memberRows.push(i);
    if (usable[i] || ops[i] === OP_SPAWN) yieldRows.push(i);
  }
  const bySlot = (a, b) => rows[a] - rows[b];
  memberRows.sort(bySlot);
  yieldRows.sort(bySlot);
  const members = Uint16Array.from(memberRows, (i) => rows[i]);
  const slots = Uint16Array.from(yieldRows, (i) => rows[i]);
  const words = new Uint16Array(slots.length * WORDS);
  yieldRows.forEach((i, k) => words.set(out.subarray(i * WORDS, i * WORDS + WORDS), k * WORDS));
  return { cell, baselineTick, members, slots, words, skipped: memberRows.length - yieldRows.length };
}

/** Decode one chunk (Uint8Array) of snapshot `tick`; see decodeChunkBody. */
export async function decodeChunk(chunk, tick, rate, kept, posScale = units.pos) {
  const { flags, body } = await chunkBody(chunk);
  return decodeChunkBody(flags, body, tick, rate, kept, posScale);
}

/** Parse a personal part: {reset, left, gone, spawnSlots, spawnWords}. Throws CodecError. */
export function decodePersonal(data) {
  if (!(data instanceof Uint8Array) || data.length < 1) throw new CodecError("empty personal part");
  const flags = data[0];
  if (flags & ~PERSONAL_RESET) {
    throw new CodecError(`unknown personal flag bits 0x${flags.toString(16).padStart(2, "0")}`);
  }
  const body = data.subarray(1);
  const r = reader(body);
  const lists = [];
  for (const what of ["left", "gone", "spawn"]) {
    r.need(2, "personal part");
    const n = r.dv.getUint16(r.at, true);
    r.at += 2;
    lists.push(r.slots(n, what));
  }
  const [left, gone, spawnSlots] = lists;
  const gl = new Set(left);
  for (const s of gone) if (gl.has(s)) throw new CodecError("a slot is both left and gone");
  const spawnWords = new Uint16Array(spawnSlots.length * WORDS);
  r.at = readSpawns(body, r.dv, r.at, spawnWords, [...spawnSlots.keys()]);
  if (r.at !== body.length) throw new CodecError(`${body.length - r.at} trailing bytes in the personal part`);
  return { reset: (flags & PERSONAL_RESET) !== 0, left, gone, spawnSlots, spawnWords };
}

/**
 * A client's view of a chunked session (proto/README.md, "Applying a snapshot"). Slot s is
 * in the view when `inView[s]`; its record is `viewWords[s*8 .. s*8+8]`, from tick `asOf[s]`.
 */
export class ChunkMirror {
  constructor(rate, posScale = units.pos, keep = 256) {
    this.rate = rate;
    this.posScale = posScale;
    this.keep = keep;
    this.kept = new Map(); // tick -> Kept, oldest first (insertion order)
    this.viewWords = new Uint16Array(0);
    this.inView = new Uint8Array(0);
    this.asOf = new Float64Array(0);
    this.tick = 0;
    this.ackTick = 0;
    this.waitingReset = true; // nothing applied yet: the first snapshot resets
    this.lastReset = false; // the last snapshot applied had the reset flag
    this.skipped = 0;
    this.left = new Uint16Array(0); // the last snapshot's removals (fades)
    this.gone = new Uint16Array(0);
    this.entered = []; // the last snapshot's newcomers to the view: [{slot, id}]
    this.leftIds = []; // the last snapshot's leavers that were in the view: [{slot, id}]
  }

  _grow(top) {
    const n = this.inView.length;
    if (top < n) return;
    const size = Math.max(top + 1, 2 * n, 64);
    const words = new Uint16Array(size * WORDS);
    words.set(this.viewWords);
    this.viewWords = words;
    const inView = new Uint8Array(size);
    inView.set(this.inView);
    this.inView = inView;
    const asOf = new Float64Array(size);
    asOf.set(this.asOf);
    this.asOf = asOf;
  }

  clear() {
    this.kept.clear();
    this.inView.fill(0);
  }

  /**
   * Apply snapshot `tick` ({chunks: [Uint8Array], personal: Uint8Array}). Resolves to true,
   * or false when it was ignored (waiting for a reset). Rejects with CodecError, after
   * which the mirror is cleared and acks 0.
   */
  async apply(tick, chunks, personal) {
    try {
      // Inflate first (asynchronous), then apply synchronously: nothing else runs between.
      const part = decodePersonal(personal);
      if (this.waitingReset && !part.reset) return false;
      const bodies = [];
      for (const c of chunks) bodies.push(await chunkBody(c));
      return this._apply(tick, bodies, part);
    } catch (err) {
      if (err instanceof CodecError) {
        this.clear();
        this.ackTick = 0;
        this.waitingReset = true;
      }
      throw err;
    }
  }

  _apply(tick, bodies, part) {
    this.lastReset = part.reset;
    if (part.reset) {
      this.clear();
      this.waitingReset = false;
    }
    // slot -> [words array, row] of what this snapshot carries; personal spawns win.
    const carried = new Map();
    const cells = new Map(); // cell -> its members now: the baseline of its next chunks
    let skipped = 0; // counted once the snapshot is applied (a rejected one adds nothing)
    for (const { flags, body } of bodies) {
      const d = decodeChunkBody(flags, body, tick, this.rate, this.kept, this.posScale);
      if (cells.has(d.cell)) throw new CodecError(`cell ${d.cell} twice in one snapshot`);
      cells.set(d.cell, d.members);
      skipped += d.skipped;
      for (let i = 0; i < d.slots.length; i++) {
        if (carried.has(d.slots[i])) throw new CodecError("a slot is in two chunks of one snapshot");
        carried.set(d.slots[i], [d.words, i]);
      }
    }
    for (let i = 0; i < part.spawnSlots.length; i++) carried.set(part.spawnSlots[i], [part.spawnWords, i]);
    const slots = Uint16Array.from(carried.keys()).sort();
    const words = new Uint16Array(slots.length * WORDS);
    for (let k = 0; k < slots.length; k++) {
      const [src, i] = carried.get(slots[k]);
      words.set(src.subarray(i * WORDS, i * WORDS + WORDS), k * WORDS);
    }
    // Removals first (a slot removed and carried again in one snapshot is carried).
    this.leftIds = [];
    for (const list of [part.left, part.gone]) {
      for (const s of list) {
        if (s >= this.inView.length || !this.inView[s]) continue;
        if (list === part.left) this.leftIds.push({ slot: s, id: this.viewWords[s * WORDS + W_KIND_GEN] });
        this.inView[s] = 0;
      }
    }
    this.entered = [];
    if (slots.length) this._grow(slots[slots.length - 1]);
    for (let k = 0; k < slots.length; k++) {
      const s = slots[k], o = s * WORDS;
      const id = words[k * WORDS + W_KIND_GEN];
      if (!this.inView[s] || this.viewWords[o + W_KIND_GEN] !== id) this.entered.push({ slot: s, id });
      this.viewWords.set(words.subarray(k * WORDS, k * WORDS + WORDS), o);
      this.inView[s] = 1;
      this.asOf[s] = tick;
    }
    this.left = part.left;
    this.gone = part.gone;
    this.skipped += skipped;
    this.kept.set(tick, new Kept(new Carried(slots, words), cells));
    while (this.kept.size > this.keep) this.kept.delete(this.kept.keys().next().value);
    this.tick = tick;
    this.ackTick = tick;
    return true;
  }

  /** {slots, words, asOf} of everything in the view, ascending slots. */
  view() {
    const slots = [];
    for (let s = 0; s < this.inView.length; s++) if (this.inView[s]) slots.push(s);
    const words = new Uint16Array(slots.length * WORDS);
    const asOf = slots.map((s) => this.asOf[s]);
    slots.forEach((s, k) => words.set(this.viewWords.subarray(s * WORDS, s * WORDS + WORDS), k * WORDS));
    return { slots, words, asOf };
  }

  /** How many entities the view holds. */
  get size() {
    let n = 0;
    for (let s = 0; s < this.inView.length; s++) n += this.inView[s];
    return n;
  }

  /**
   * The view as a dense snapshot at tick `tick` (Uint16Array, 8 words per slot up to the
   * highest slot in view): every record dead-reckoned from its own `as_of` to `tick`.
   */
  wordsAt(tick) {
    let top = -1;
    for (let s = this.inView.length - 1; s >= 0; s--) {
      if (this.inView[s]) {
        top = s;
        break;
      }
    }
    const out = new Uint16Array((top + 1) * WORDS);
    const one = new Uint16Array(WORDS);
    for (let s = 0; s <= top; s++) {
      if (!this.inView[s]) continue;
      const o = s * WORDS;
      const behind = tick - this.asOf[s];
      if (behind > 0) {
        one.set(this.viewWords.subarray(o, o + WORDS));
        predictInPlace(one, behind, this.rate, this.posScale);
        out.set(one, o);
      } else {
        out.set(this.viewWords.subarray(o, o + WORDS), o);
      }
    }
    return out;
  }
}
