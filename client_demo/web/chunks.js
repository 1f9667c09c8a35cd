// Chunked snapshots (interest management): the JavaScript twin of proto/chunks.py.
//
// Theory of operation
// -------------------
// In a room with interest management (Welcome.interest present) a snapshot of tick T
// carries no payload: it carries chunks, one per grid cell sent to us, and a personal
// part (proto/README.md, "Chunked snapshots", is the byte-level spec). A chunk lists the
// live entities of one cell as 2-bit ops against each entity's record at the chunk's
// baseline tick b = T - elapsed, with the spawn and residual sections of the payload codec
// (codec.js). A member with op 0/1 is decoded from the record of its slot that OUR
// snapshot b carried; when snapshot b did not carry that slot the member is skipped (the
// server sends that entity whole in the personal part). The personal part says which
// slots LEFT our interest (fade them out) and which are GONE from the world (remove at
// once), and whether to reset.
//
// `ChunkMirror` is the client's view: slot -> (record, as_of tick), and, for the newest
// `keep` snapshots, the records each one carried (the baselines of later chunks). Records
// not carried by a snapshot keep their older `as_of` (the budget sends far cells less
// often); `wordsAt(T)` dead-reckons every record of the view to tick T, which is what the
// rest of the client (interpolation, events, shots) consumes, as a dense snapshot.
// Any malformed input rejects the whole snapshot with CodecError and clears the mirror,
// which then acks 0 and waits for a snapshot with the reset flag.

import { CodecError, WORDS, W_KIND_GEN, FLAG_KEYFRAME, FLAG_DEFLATE, OP_SPAWN, OP_UPDATE,
         inflate, readSpawns, applyUpdates, predictInPlace, units } from "./codec.js";

export const PERSONAL_RESET = 0x01;
const CHUNK_HEADER_BYTES = 8; // cell:u32 elapsed:u16 count:u16

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
 * Decode an inflated chunk body of snapshot `tick` (flags given apart). `kept`: Map tick ->
 * Carried. Returns {cell, baselineTick, slots, words, skipped}: the members we could decode
 * (ascending slots) and how many were skipped. Throws CodecError.
 */
export function decodeChunkBody(flags, body, tick, rate, kept, posScale = units.pos) {
  const keyframe = (flags & FLAG_KEYFRAME) !== 0;
  const r = reader(body);
  r.need(CHUNK_HEADER_BYTES, "chunk");
  const cell = r.dv.getUint32(0, true), elapsed = r.dv.getUint16(4, true), n = r.dv.getUint16(6, true);
  r.at = CHUNK_HEADER_BYTES;
  if (n === 0) throw new CodecError("chunk with no members");
  if (keyframe !== (elapsed === 0)) throw new CodecError("a chunk's elapsed is 0 exactly when it is a keyframe");
  const slots = r.slots(n, "chunk");
  const nOps = (n + 3) >> 2;
  r.need(nOps, "chunk");
  const ops = new Uint8Array(n);
  for (let i = 0; i < nOps * 4; i++) {
    const op = (body[r.at + (i >> 2)] >> (2 * (i & 3))) & 3;
    if (i >= n) {
      if (op) throw new CodecError("ops beyond the count are not zero");
      continue;
    }
    if (op === 3) throw new CodecError("op 3 in a chunk");
    if (keyframe && op !== OP_SPAWN) throw new CodecError("keyframe chunk with a non-spawn op");
    ops[i] = op;
  }
  r.at += nOps;
  const out = new Uint16Array(n * WORDS);
  const found = new Uint8Array(n).fill(1);
  let baselineTick = 0;
  if (!keyframe) {
    baselineTick = tick - elapsed;
    const carried = kept.get(baselineTick);
    if (!carried) throw new CodecError(`chunk baseline ${baselineTick} is not kept`);
    for (let i = 0; i < n; i++) {
      if (ops[i] === OP_SPAWN) continue;
      const j = carried.index.get(slots[i]);
      if (j === undefined) {
        found[i] = 0; // our snapshot b did not carry it: it comes in the personal part
        continue;
      }
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
  let m = 0;
  for (let i = 0; i < n; i++) m += found[i];
  const keptSlots = new Uint16Array(m), keptWords = new Uint16Array(m * WORDS);
  for (let i = 0, k = 0; i < n; i++) {
    if (!found[i]) continue;
    keptSlots[k] = slots[i];
    keptWords.set(out.subarray(i * WORDS, i * WORDS + WORDS), k * WORDS);
    k++;
  }
  return { cell, baselineTick, slots: keptSlots, words: keptWords, skipped: n - m };
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
    this.kept = new Map(); // tick -> Carried, oldest first (insertion order)
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
    for (const { flags, body } of bodies) {
      const d = decodeChunkBody(flags, body, tick, this.rate, this.kept, this.posScale);
      this.skipped += d.skipped;
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
    this.kept.set(tick, new Carried(slots, words));
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
