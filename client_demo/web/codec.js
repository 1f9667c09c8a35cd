// Snapshot payload decoder: the JavaScript twin of proto/codec.py's `decode`.
//
// Theory of operation
// -------------------
// A snapshot is one 16-byte record per entity slot, eight little-endian u16 words
// (x, y, vx, vy, hp, score, kind|gen<<8, aim|flags<<8); we keep it as a Uint16Array of
// span*8 words. A payload is `flags:u8` then a body (zlib-deflated when flags bit 1 is
// set). A keyframe decodes on its own; a delta decodes against the snapshot of its
// baseline tick: every slot of the baseline is first moved forward by its own velocity
// (integer dead reckoning, exact in doubles), then each slot's 2-bit op says unchanged /
// update (residuals on some words) / spawn (whole record) / remove. The byte layout is
// specified in proto/README.md; any malformed payload is rejected whole with CodecError.
//
// Inflating uses the browser's DecompressionStream('deflate') (zlib-wrapped, RFC 1950),
// which is asynchronous: callers must keep snapshot decoding in arrival order.

export const WORDS = 8;
export const W_X = 0, W_Y = 1, W_VX = 2, W_VY = 3, W_HP = 4, W_SCORE = 5, W_KIND_GEN = 6, W_AIM_FLAGS = 7;
export const OP_UNCHANGED = 0, OP_UPDATE = 1, OP_SPAWN = 2, OP_REMOVE = 3;
export const FLAG_KEYFRAME = 0x01, FLAG_DEFLATE = 0x02;
// Entity kinds and flags come from the .proto's enums (gen/wire.js, made by `make install`).
export { KIND_EMPTY, KIND_PLAYER, KIND_NPC, KIND_PROJECTILE, EFLAG_DEAD, EFLAG_FIRED } from "./gen/wire.js";
export const POS_SCALE = 16, VEL_SCALE = 16, AIM_STEPS = 256;
// The position scale in force: quantised units per world unit. A world bigger than
// 65535 / 16 units needs a smaller one, which the server sends in Welcome.pos_scale
// (absent or 0: POS_SCALE). One page talks to one room at a time and every decoded
// snapshot is dropped at a Welcome, so this is set once per session (setPosScale).
export const units = { pos: POS_SCALE };

/** Use the Welcome's position scale (absent or 0: POS_SCALE). Returns the scale in force. */
export function setPosScale(scale) {
  units.pos = Number.isFinite(scale) && scale > 0 ? scale : POS_SCALE;
  return units.pos;
}
export const MAX_SLOTS = 65535;
// The largest body a valid payload can inflate to: header, ops, every slot spawned, widths.
export const MAX_BODY_BYTES = 5 + Math.floor((MAX_SLOTS + 3) / 4) + MAX_SLOTS * 16 + 8;

const WORD_NAMES = ["x", "y", "vx", "vy", "hp", "score", "kind_gen", "aim_flags"];

/** A payload that is not a valid snapshot encoding (or does not fit its baseline). */
export class CodecError extends Error {
  constructor(message) {
    super(message);
    this.name = "CodecError";
  }
}

/** Inflate a zlib stream (RFC 1950) with a size limit. Resolves to a Uint8Array. */
export async function inflate(bytes, limit = MAX_BODY_BYTES) {
  const ds = new DecompressionStream("deflate");
  const writer = ds.writable.getWriter();
  // Errors surface on the readable side; swallow them here to avoid unhandled rejections.
  const written = writer.write(bytes).then(() => writer.close()).catch(() => {});
  const reader = ds.readable.getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        reader.cancel().catch(() => {});
        throw new CodecError(`inflated body is larger than ${limit} bytes`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof CodecError) throw err;
    throw new CodecError(`deflated body is truncated, corrupt or has trailing bytes (${err.message})`);
  }
  await written;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  // Some DecompressionStream implementations ignore bytes after the end of the stream.
  // The stream ends with the Adler-32 of its output (checked by the inflater), so a
  // payload whose last four bytes are not that checksum has trailing bytes.
  const n = bytes.length;
  const tail = n >= 4 ? ((bytes[n - 4] << 24) | (bytes[n - 3] << 16) | (bytes[n - 2] << 8) | bytes[n - 1]) >>> 0 : -1;
  if (tail !== adler32(out)) throw new CodecError("deflated body has trailing bytes");
  return out;
}

function adler32(data) {
  let a = 1, b = 0;
  for (let i = 0; i < data.length; ) {
    const end = Math.min(i + 3800, data.length); // keep sums far below 2**53 between mods
    for (; i < end; i++) {
      a += data[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** Whether a payload is a keyframe (decodable without a baseline). */
export function isKeyframe(payload) {
  if (!payload || payload.length < 1) throw new CodecError("empty payload");
  return (payload[0] & FLAG_KEYFRAME) !== 0;
}

/**
 * Decode a payload (Uint8Array) against `baseline` (Uint16Array of span*8 words, or null
 * for a keyframe). Resolves to {words, span, rate, elapsed, keyframe}; rejects with
 * CodecError for any malformed payload.
 */
export async function decodePayload(payload, baseline, posScale = units.pos) {
  if (!(payload instanceof Uint8Array) || payload.length < 1) throw new CodecError("empty payload");
  const flags = payload[0];
  if (flags & ~(FLAG_KEYFRAME | FLAG_DEFLATE)) {
    throw new CodecError(`unknown flag bits 0x${flags.toString(16).padStart(2, "0")}`);
  }
  let body = payload.subarray(1);
  if (flags & FLAG_DEFLATE) body = await inflate(body);
  return decodeBody(body, (flags & FLAG_KEYFRAME) !== 0, baseline, posScale);
}

/**
 * Dead reckoning of a baseline to `span` slots, `elapsed` ticks ahead at `rate` Hz, with
 * positions in `posScale` quanta per unit (velocities are always 16 per unit/s).
 */
export function predictWords(baseline, span, elapsed, rate, posScale = units.pos) {
  const out = new Uint16Array(span * WORDS);
  const have = baseline ? Math.min(baseline.length, out.length) : 0;
  if (have) out.set(baseline.subarray(0, have));
  if (elapsed) predictInPlace(out, elapsed, rate, posScale);
  return out;
}

/**
 * Move every live record of `words` (8 words each) `elapsed` ticks ahead, in place:
 * x' = clamp(x + floor((2·v·k·P + 16·r) / (32·r)), 0, 65535), likewise y (proto/README.md,
 * "Snapshot payload"). Exact in doubles: every operand is an integer far below 2**53.
 */
export function predictInPlace(words, elapsed, rate, posScale = units.pos) {
  const num = 2 * elapsed * posScale, den = 32 * rate, half = 16 * rate;
  for (let o = 0; o < words.length; o += WORDS) {
    if ((words[o + W_KIND_GEN] & 0xff) === 0) continue; // empty slots are all zero
    const vx = (words[o + W_VX] << 16) >> 16, vy = (words[o + W_VY] << 16) >> 16;
    if (vx) words[o + W_X] = clampU16(words[o + W_X] + Math.floor((vx * num + half) / den));
    if (vy) words[o + W_Y] = clampU16(words[o + W_Y] + Math.floor((vy * num + half) / den));
  }
}

function clampU16(v) {
  return v < 0 ? 0 : v > 65535 ? 65535 : v;
}

/** Decode an (inflated) body. See decodePayload. */
export function decodeBody(body, keyframe, baseline, posScale = units.pos) {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > body.length) {
      throw new CodecError(`truncated payload: wanted ${n} bytes, ${body.length - at} left`);
    }
  };
  need(5);
  const rate = dv.getUint8(0), elapsed = dv.getUint16(1, true), span = dv.getUint16(3, true);
  at = 5;
  if (rate === 0) throw new CodecError("tick rate 0 in header");
  let out;
  if (keyframe) {
    if (elapsed !== 0) throw new CodecError("keyframe with a nonzero elapsed tick count");
    out = new Uint16Array(span * WORDS);
  } else {
    if (!baseline) throw new CodecError("delta payload needs a baseline");
    for (let o = span * WORDS; o < baseline.length; o += WORDS) {
      if (baseline[o + W_KIND_GEN] & 0xff) throw new CodecError(`state has live slots beyond slot ${span}`);
    }
    out = predictWords(baseline, span, elapsed, rate, posScale);
  }

  // ops: 2 bits per slot
  const nOps = (span + 3) >> 2;
  need(nOps);
  const ops = new Uint8Array(span);
  const spawnIdx = [], updIdx = [];
  for (let i = 0; i < nOps * 4; i++) {
    const op = (body[at + (i >> 2)] >> (2 * (i & 3))) & 3;
    if (i >= span) {
      if (op) throw new CodecError("ops beyond the span are not zero");
      continue;
    }
    ops[i] = op;
    if (op === OP_UNCHANGED) continue;
    if (keyframe && (op & 1)) throw new CodecError("keyframe with update or remove ops");
    const live = (out[i * WORDS + W_KIND_GEN] & 0xff) !== 0;
    if ((op === OP_UPDATE || op === OP_REMOVE) && !live) {
      throw new CodecError("update or remove of a slot that is empty in the baseline");
    }
    if (op === OP_REMOVE) out.fill(0, i * WORDS, i * WORDS + WORDS);
    else if (op === OP_SPAWN) spawnIdx.push(i);
    else updIdx.push(i);
  }
  at += nOps;

  at = readSpawns(body, dv, at, out, spawnIdx);
  at = applyUpdates(body, dv, at, out, updIdx);
  if (at !== body.length) throw new CodecError(`${body.length - at} trailing bytes`);
  return { words: out, span, rate, elapsed, keyframe };
}

/**
 * The spawns section: for the records `rows` (indexes into `out`, 8 words each), their 8
 * words column by column from `at`. Returns the offset after it. Shared with chunks.js.
 */
export function readSpawns(body, dv, at, out, rows) {
  const S = rows.length;
  if (at + 16 * S > body.length) {
    throw new CodecError(`truncated payload: wanted ${16 * S} bytes, ${body.length - at} left`);
  }
  for (let w = 0; w < WORDS; w++) {
    for (let j = 0; j < S; j++) out[rows[j] * WORDS + w] = dv.getUint16(at + 2 * (w * S + j), true);
  }
  for (let j = 0; j < S; j++) {
    if ((out[rows[j] * WORDS + W_KIND_GEN] & 0xff) === 0) throw new CodecError("spawn of an empty record");
  }
  return at + 16 * S;
}

/**
 * The updates section for the records `rows` (indexes into `out`): masks, widths and
 * residual columns from `at`, added to `out` mod 2**16. Returns the offset after it.
 */
export function applyUpdates(body, dv, at, out, rows) {
  const U = rows.length;
  if (!U) return at;
  const need = (n) => {
    if (at + n > body.length) {
      throw new CodecError(`truncated payload: wanted ${n} bytes, ${body.length - at} left`);
    }
  };
  need(U + WORDS);
  const masks = body.subarray(at, at + U);
  at += U;
  for (let j = 0; j < U; j++) {
    if (masks[j] === 0) throw new CodecError("update with an empty field mask");
    if (masks[j] & (1 << W_KIND_GEN)) {
      throw new CodecError("update changes kind or generation (that is a spawn)");
    }
  }
  const widths = body.subarray(at, at + WORDS);
  at += WORDS;
  for (let w = 0; w < WORDS; w++) {
    const sel = [];
    for (let j = 0; j < U; j++) if (masks[j] & (1 << w)) sel.push(rows[j]);
    const width = widths[w];
    if (sel.length === 0) {
      if (width !== 0) throw new CodecError(`width given for absent word ${WORD_NAMES[w]}`);
      continue;
    }
    if (width !== 1 && width !== 2) throw new CodecError(`invalid width ${width} for word ${WORD_NAMES[w]}`);
    need(sel.length * width);
    for (const row of sel) {
      const r = width === 1 ? dv.getInt8(at) : dv.getInt16(at, true);
      at += width;
      const o = row * WORDS + w;
      out[o] = (out[o] + r) & 0xffff; // wraps mod 2**16, as encoded
    }
  }
  return at;
}

/** The entity in `slot` of a decoded snapshot, in world units, or null when empty. */
export function entityAt(words, slot) {
  const o = slot * WORDS;
  if (o + WORDS > words.length) return null;
  const kg = words[o + W_KIND_GEN];
  if ((kg & 0xff) === 0) return null;
  const af = words[o + W_AIM_FLAGS];
  return {
    slot,
    x: words[o + W_X] / units.pos,
    y: words[o + W_Y] / units.pos,
    vx: ((words[o + W_VX] << 16) >> 16) / VEL_SCALE,
    vy: ((words[o + W_VY] << 16) >> 16) / VEL_SCALE,
    hp: words[o + W_HP],
    score: words[o + W_SCORE],
    kind: kg & 0xff,
    gen: kg >> 8,
    id: kg, // kind and generation together: a change means a different entity
    aim: ((af & 0xff) * 2 * Math.PI) / AIM_STEPS,
    flags: af >> 8,
  };
}

/** The number of live entities in a decoded snapshot. */
export function countLive(words) {
  let n = 0;
  for (let o = W_KIND_GEN; o < words.length; o += WORDS) if (words[o] & 0xff) n++;
  return n;
}

/**
 * Decoded snapshots by tick, for baselines: keeps the newest `size` ticks
 * (2 x tick_rate is enough, see "Acks and baselines" in proto/README.md).
 */
export class SnapshotRing {
  constructor(size = 64) {
    this.size = size;
    this.byTick = new Map();
    this.newest = 0;
  }
  put(tick, words) {
    this.byTick.set(tick, words);
    if (tick > this.newest) this.newest = tick;
    for (const t of this.byTick.keys()) if (t <= this.newest - this.size) this.byTick.delete(t);
  }
  get(tick) {
    return this.byTick.get(tick) || null;
  }
  clear() {
    this.byTick.clear();
    this.newest = 0;
  }
}
