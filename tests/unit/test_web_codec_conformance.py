"""The browser's snapshot decoder (client_demo/web/codec.js) against the Python reference.

Cases are built in Python with a seeded RNG (keyframes, deltas with moves, spawns, removes,
slot reuse, growth and shrinkage of the span, narrow and wide residual columns, clamped
dead reckoning, deflated and raw bodies) and encoded with ``proto.codec.encode``; mutants of
those payloads (truncated, bit-flipped, trailing bytes, wrong flags or baselines) are added
with the Python decoder's verdict. One Node process decodes every case with codec.js's
``decodePayload`` and prints the results as JSON; every case must come out exactly as it
does in Python: the same snapshot (trailing empty slots don't count, as in
``proto.codec.states_equal``), or a rejection with ``CodecError``.

Skipped when ``node`` is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from proto import codec
from proto.codec import STATE_DTYPE, CodecError

ROOT = Path(__file__).resolve().parents[2]
CODEC_JS = ROOT / "client_demo" / "web" / "codec.js"

NODE_SCRIPT = """\
import { readFileSync } from "node:fs";

const codec = await import(process.argv[2]);
const cases = JSON.parse(readFileSync(process.argv[3], "utf8"));
const results = [];
for (const [i, c] of cases.entries()) {
  const raw = Buffer.from(c.payload, "hex");
  // Every other case sits at an odd offset inside a larger buffer, so the decoder must
  // honour byteOffset (as it must for a subarray of a WebSocket message).
  let payload;
  if (i % 2) {
    const backing = new Uint8Array(raw.length + 7).fill(0xa5);
    backing.set(raw, 3);
    payload = backing.subarray(3, 3 + raw.length);
  } else {
    payload = Uint8Array.from(raw);
  }
  const baseline = c.baseline === null ? null : Uint16Array.from(c.baseline.flat());
  try {
    const r = await codec.decodePayload(payload, baseline, c.posScale);
    results.push({ ok: true, span: r.span, rate: r.rate, elapsed: r.elapsed,
                   keyframe: r.keyframe, words: Array.from(r.words) });
  } catch (err) {
    results.push({ ok: false, codecError: err instanceof codec.CodecError,
                   error: `${err && err.name}: ${err && err.message}` });
  }
}
process.stdout.write(JSON.stringify(results));
"""


# -- case generation -----------------------------------------------------------------------------

def random_state(rng: np.random.Generator, slots: int, live_fraction: float) -> np.ndarray:
    """Random canonical snapshot: live slots random in every word, empty slots all zero."""
    state = np.zeros(slots, dtype=STATE_DTYPE)
    state.view("<u2").reshape(-1, 8)[:] = rng.integers(0, 65536, size=(slots, 8))
    live = rng.random(slots) < live_fraction
    state["kind"] = np.where(live, rng.integers(1, 4, size=slots), 0)
    state[~live] = 0
    return state


def moving_state(rng: np.random.Generator, slots: int, live_fraction: float,
                 speed: int = 800) -> np.ndarray:
    """Like random_state, but with positions mid-world and game-like velocities."""
    state = random_state(rng, slots, live_fraction)
    live = state["kind"] != 0
    state["x"] = np.where(live, rng.integers(1_000, 64_000, slots), 0)
    state["y"] = np.where(live, rng.integers(1_000, 64_000, slots), 0)
    state["vx"] = np.where(live, rng.integers(-speed, speed + 1, slots), 0)
    state["vy"] = np.where(live, rng.integers(-speed, speed + 1, slots), 0)
    return state


def evolve(rng: np.random.Generator, base: np.ndarray, ticks: int, rate: int, *,
           wide: bool = False, grow: int = 0, p_remove: float = 0.05,
           p_reuse: float = 0.05, p_spawn: float = 0.05) -> np.ndarray:
    """A next state: dead reckoning plus small moves, some changed words (wide residuals
    when `wide`), removals, reused slots (generation bumped), spawns into empty slots and
    `grow` new slots past the end."""
    nxt = codec.predict(base, ticks, rate).copy()
    n = len(nxt)
    live = nxt["kind"] != 0
    jitter = rng.integers(-3, 4, size=(n, 2))
    nxt["x"] = np.clip(nxt["x"].astype(np.int64) + jitter[:, 0], 0, 65535)
    nxt["y"] = np.clip(nxt["y"].astype(np.int64) + jitter[:, 1], 0, 65535)
    hit = rng.random(n) < (0.3 if wide else 0.1)
    if wide:
        nxt["hp"][hit] = rng.integers(0, 65536, size=hit.sum())
        turned = rng.random(n) < 0.2
        nxt["vx"][turned] = rng.integers(-32768, 32768, size=turned.sum())
        nxt["score"][rng.random(n) < 0.2] += 1000
    else:
        nxt["hp"][hit] -= rng.integers(0, 100, size=hit.sum()).astype(np.uint16)
        nxt["vy"][rng.random(n) < 0.1] += 5
    nxt["aim"][rng.random(n) < 0.1] += 3
    nxt["flags"][rng.random(n) < 0.05] ^= 1
    nxt[live & (rng.random(n) < p_remove)] = 0
    reused = live & (nxt["kind"] != 0) & (rng.random(n) < p_reuse)
    nxt["gen"][reused] += 1
    fresh = random_state(rng, n, 1.0)
    nxt["x"][reused] = fresh["x"][reused]
    spawn = ~live & (rng.random(n) < p_spawn)
    nxt[spawn] = fresh[spawn]
    out = np.concatenate([nxt, random_state(rng, grow, 0.8)])
    out[out["kind"] == 0] = 0
    return out


def as_rows(state: np.ndarray | None) -> list[list[int]] | None:
    if state is None:
        return None
    return np.ascontiguousarray(state).view("<u2").reshape(-1, 8).tolist()


def body_of(payload: bytes) -> bytes:
    return zlib.decompress(payload[1:]) if payload[0] & codec.FLAG_DEFLATE else payload[1:]


def residual_widths(payload: bytes) -> bytes:
    """The 8 width bytes of a valid payload (all 0 when it has no updates)."""
    body = body_of(payload)
    span = int.from_bytes(body[3:5], "little")
    ops = codec._unpack_ops(body[5 : 5 + (span + 3) // 4], span)
    at = 5 + (span + 3) // 4 + 16 * int((ops == codec.OP_SPAWN).sum())
    updates = int((ops == codec.OP_UPDATE).sum())
    return body[at + updates : at + updates + 8] if updates else bytes(8)


def op_counts(payload: bytes) -> np.ndarray:
    body = body_of(payload)
    span = int.from_bytes(body[3:5], "little")
    return np.bincount(codec._unpack_ops(body[5 : 5 + (span + 3) // 4], span), minlength=4)


def python_outcome(payload: bytes, baseline: np.ndarray | None,
                   pos_scale: int = codec.POS_SCALE) -> np.ndarray | None:
    try:
        return codec.decode(payload, baseline, pos_scale=pos_scale)
    except CodecError:
        return None


def build_cases() -> list[dict]:
    rng = np.random.default_rng(20240611)
    valid: list[dict] = []

    def add(name, state, baseline, *, elapsed=0, rate=30, deflate=True, pos_scale=16):
        payload = codec.encode(state, baseline, elapsed_ticks=elapsed, tick_rate=rate,
                               deflate=deflate, pos_scale=pos_scale)
        decoded = codec.decode(payload, baseline, pos_scale=pos_scale)
        assert codec.states_equal(decoded, state), name  # the reference round-trips
        valid.append({"name": name, "kind": "valid", "payload_bytes": payload,
                      "baseline_state": baseline, "state": state,
                      "expected_state": decoded, "pos_scale": pos_scale})

    # Keyframes: empty world, one entity, sparse and dense worlds, raw and deflated.
    add("keyframe-empty", codec.empty_state(0), None)
    add("keyframe-empty-slots", codec.empty_state(12), None)
    add("keyframe-one", random_state(rng, 1, 1.0), None)
    for i, (slots, live) in enumerate([(5, 0.5), (64, 0.7), (300, 0.9), (200, 0.1)]):
        st = random_state(rng, slots, live)
        add(f"keyframe-{slots}-{live}", st, None)
        add(f"keyframe-{slots}-{live}-raw", st, None, deflate=False)
        if i == 0:
            # A keyframe ignores any baseline the client still holds.
            add("keyframe-ignores-baseline", st, random_state(rng, 40, 1.0))

    # Pure dead reckoning: every op 0, including at the rate/elapsed extremes.
    for rate, elapsed in [(30, 1), (30, 2), (1, 1), (255, 1), (60, 65535), (7, 13)]:
        base = moving_state(rng, 50, 0.8)
        add(f"dead-reckoning-r{rate}-k{elapsed}", codec.predict(base, elapsed, rate).copy(),
            base, elapsed=elapsed, rate=rate)
    add("delta-elapsed-0", (b := moving_state(rng, 30, 0.8)).copy(), b, elapsed=0)

    # Clamping at the world's edges: positions near 0/65535, large velocities.
    edge = moving_state(rng, 40, 1.0, speed=32767)
    edge["x"][::2] = 65530
    edge["y"][1::2] = 3
    edge["vx"][::2] = 32767
    edge["vy"][1::2] = -32768
    add("clamped-prediction", codec.predict(edge, 40, 30).copy(), edge, elapsed=40)
    add("clamped-prediction-with-updates", evolve(rng, edge, 40, 30), edge, elapsed=40)

    # Deltas: small residuals (i8 columns) and wide ones (i16 columns), raw and deflated.
    for i in range(12):
        slots = int(rng.integers(1, 250))
        rate = int(rng.choice([10, 20, 30, 60, 128, 255]))
        ticks = int(rng.integers(1, 40))
        base = moving_state(rng, slots, float(rng.uniform(0.3, 1.0)))
        wide = bool(i % 2)
        st = evolve(rng, base, ticks, rate, wide=wide, grow=int(rng.integers(0, 6)))
        add(f"delta-{i}-{'wide' if wide else 'narrow'}", st, base, elapsed=ticks, rate=rate)
        add(f"delta-{i}-{'wide' if wide else 'narrow'}-raw", st, base, elapsed=ticks,
            rate=rate, deflate=False)

    # Each op on its own.
    base = moving_state(rng, 20, 0.6)
    live_idx = np.flatnonzero(base["kind"])
    empty_idx = np.flatnonzero(base["kind"] == 0)
    st = codec.predict(base, 1, 30).copy()
    st[live_idx[:3]] = 0
    add("removes-only", st, base, elapsed=1, deflate=False)
    st = codec.predict(base, 1, 30).copy()
    st[empty_idx[:3]] = random_state(rng, 3, 1.0)
    add("spawns-into-empty-slots", st, base, elapsed=1, deflate=False)
    st = codec.predict(base, 1, 30).copy()
    st["gen"][live_idx[:4]] += 1  # same kind, new generation: a reused slot
    add("slot-reuse-gen-bump", st, base, elapsed=1, deflate=False)
    st = codec.predict(base, 1, 30).copy()
    st["gen"][live_idx[:2]] = 255
    st["gen"][live_idx[2:4]] = 0  # wraps 255 -> 0 as well
    st["kind"][live_idx[4:6]] = (st["kind"][live_idx[4:6]] % 3) + 1  # new kind, same gen
    add("slot-reuse-kind-change", st, base, elapsed=1, deflate=False)
    st = codec.predict(base, 1, 30).copy()
    st["hp"][live_idx[:5]] += np.array([1, -1, 127, -128, 128], dtype=np.int64).astype(
        np.uint16)
    add("residual-width-boundaries", st, base, elapsed=1, deflate=False)
    st = codec.predict(base, 1, 30).copy()
    st["x"][live_idx[0]] += 32768  # residual of exactly -32768 (wraps mod 2**16)
    st["aim"][live_idx[1]] ^= 0x80
    st["flags"][live_idx[1]] = 0xFF
    add("residual-extremes", st, base, elapsed=1, deflate=False)

    # Span changes: growth past the baseline, shrinkage, arrays longer than their span.
    base = moving_state(rng, 30, 0.9)
    grown = np.concatenate([codec.predict(base, 2, 30), random_state(rng, 70, 0.5)])
    grown[-1] = random_state(rng, 1, 1.0)
    add("growth-past-baseline-span", grown, base, elapsed=2)
    add("growth-past-baseline-span-raw", grown, base, elapsed=2, deflate=False)
    shrunk = codec.predict(base, 2, 30)[:10].copy()
    add("shrink-trailing-removes", shrunk, base, elapsed=2, deflate=False)
    add("all-removed", codec.empty_state(0), base, elapsed=2)
    add("from-empty-baseline", random_state(rng, 40, 0.7), codec.empty_state(0), elapsed=3)
    padded_base = np.concatenate([base, codec.empty_state(25)])
    padded_state = np.concatenate([evolve(rng, base, 2, 30), codec.empty_state(9)])
    add("trailing-empty-slots-in-arrays", padded_state, padded_base, elapsed=2)

    # Worlds bigger than 4095 units: positions in 8, 4 or 1 quanta per unit (Welcome.pos_scale),
    # so dead reckoning moves a record by fewer quanta per tick.
    for scale in (8, 4, 1):
        for rate, elapsed in [(30, 1), (30, 7), (20, 3)]:
            base = moving_state(rng, 60, 0.8, speed=30000)
            add(f"dead-reckoning-p{scale}-r{rate}-k{elapsed}",
                codec.predict(base, elapsed, rate, pos_scale=scale).copy(), base,
                elapsed=elapsed, rate=rate, pos_scale=scale)
        base = moving_state(rng, 80, 0.8)
        nxt = evolve(rng, base, 2, 30)
        add(f"delta-p{scale}", nxt, base, elapsed=2, pos_scale=scale)

    # A chain of deltas, each against the previous state (as a client sees them).
    prev = moving_state(rng, 120, 0.7)
    for step in range(6):
        nxt = evolve(rng, prev, 1, 30, wide=step == 3, grow=int(step % 3))
        add(f"chain-{step}", nxt, prev, elapsed=1, deflate=step % 2 == 0)
        prev = nxt

    # Mutants of valid payloads, with the Python decoder's verdict.
    mutants: list[dict] = []

    def mutant(name, payload, baseline, pos_scale=16):
        expected = python_outcome(payload, baseline, pos_scale)
        mutants.append({"name": name, "kind": "rejected" if expected is None else "mutant",
                        "payload_bytes": payload, "baseline_state": baseline,
                        "state": None, "expected_state": expected, "pos_scale": pos_scale})

    for case in valid:
        p, b, name = case["payload_bytes"], case["baseline_state"], case["name"]
        scale = case["pos_scale"]
        if scale != codec.POS_SCALE:
            mutant(f"{name}/bitflip-scaled", bytes([p[0]]) + bytes(
                [x ^ 0x10 if i == len(p) // 2 else x for i, x in enumerate(p[1:])]), b, scale)
            continue
        if len(p) > 1:
            mutant(f"{name}/truncated-1", p[:-1], b)
            mutant(f"{name}/truncated-half", p[: len(p) // 2], b)
        mutant(f"{name}/trailing-zero", p + b"\x00", b)
        mutant(f"{name}/trailing-junk", p + bytes(rng.integers(0, 256, 5).tolist()), b)
        for k in range(3):
            flipped = bytearray(p)
            at = int(rng.integers(0, len(p)))
            flipped[at] ^= 1 << int(rng.integers(0, 8))
            mutant(f"{name}/bitflip-{k}", bytes(flipped), b)
        mutant(f"{name}/unknown-flag", bytes([p[0] | 0x04]) + p[1:], b)
        if not p[0] & codec.FLAG_KEYFRAME:
            mutant(f"{name}/delta-without-baseline", p, None)
            if b is not None and len(b):
                pad = max(40, len(case["state"]) + 1)
                live_beyond = np.concatenate([b, codec.empty_state(pad)])
                live_beyond[-1] = random_state(rng, 1, 1.0)
                mutant(f"{name}/baseline-live-beyond-span", p, live_beyond)
        if p[0] & codec.FLAG_DEFLATE:
            mutant(f"{name}/deflate-flag-cleared", bytes([p[0] & ~codec.FLAG_DEFLATE]) + p[1:],
                   b)
            body = zlib.decompress(p[1:])
            mutant(f"{name}/body-trailing-byte-deflated",
                   bytes([p[0]]) + zlib.compress(body + b"\x00", 1), b)
        else:
            mutant(f"{name}/deflate-flag-set", bytes([p[0] | codec.FLAG_DEFLATE]) + p[1:], b)
    # Hand-made bodies for the remaining checks of the spec.
    for name, body, keyframe in [
        ("empty-payload", b"", None),
        ("rate-0", bytes([0, 0, 0, 0, 0]), True),
        ("keyframe-nonzero-elapsed", bytes([30, 1, 0, 0, 0]), True),
        ("keyframe-update-op", bytes([30, 0, 0, 1, 0, 0b01]), True),
        ("spawn-of-empty-record", bytes([30, 0, 0, 1, 0, 0b10]) + bytes(16), True),
        ("ops-beyond-span", bytes([30, 0, 0, 1, 0, 0b1000]), True),
        ("header-only-short", bytes([30, 0, 0]), True),
    ]:
        payload = b"" if keyframe is None else bytes([codec.FLAG_KEYFRAME]) + body
        mutant(name, payload, None)
    return valid + mutants


def encode_case(case: dict) -> dict:
    return {"name": case["name"], "payload": case["payload_bytes"].hex(),
            "posScale": case.get("pos_scale", codec.POS_SCALE),
            "baseline": as_rows(case["baseline_state"]),
            "expected": as_rows(case["expected_state"])}


CASES = build_cases()
VALID = [c for c in CASES if c["kind"] == "valid"]
REJECTED = [c for c in CASES if c["kind"] == "rejected"]
ACCEPTED_MUTANTS = [c for c in CASES if c["kind"] == "mutant"]


# -- running codec.js -----------------------------------------------------------------------------

def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"codec.js conformance cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def js_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH (needed to run client_demo/web/codec.js)")
    tmp = tmp_path_factory.mktemp("codecjs")
    cases_json = tmp / "cases.json"
    cases_json.write_text(json.dumps([encode_case(c) for c in CASES]), encoding="utf-8")
    script = tmp / "decode_cases.mjs"
    script.write_text(NODE_SCRIPT, encoding="utf-8")
    proc = subprocess.run([node, str(script), CODEC_JS.as_uri(), str(cases_json)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 and "DecompressionStream is not defined" in proc.stderr:
        _unavailable("this node has no DecompressionStream (needs Node >= 18)")
    assert proc.returncode == 0, f"node failed:\n{proc.stderr}"
    results = json.loads(proc.stdout)
    assert len(results) == len(CASES)
    return {c["name"]: r for c, r in zip(CASES, results, strict=True)}


def js_state(result: dict) -> np.ndarray:
    return np.array(result["words"], dtype="<u2").view(STATE_DTYPE)


def _describe(result: dict) -> str:
    return result.get("error") or f"decoded span {result.get('span')}"


# -- the tests -----------------------------------------------------------------------------------

def test_cases_cover_the_format():
    payloads = [c["payload_bytes"] for c in VALID]
    keyframes = [p for p in payloads if p[0] & codec.FLAG_KEYFRAME]
    deltas = [p for p in payloads if not p[0] & codec.FLAG_KEYFRAME]
    assert keyframes and deltas
    for group in (keyframes, deltas):
        assert any(p[0] & codec.FLAG_DEFLATE for p in group)
        assert any(not p[0] & codec.FLAG_DEFLATE for p in group)
    ops = sum(op_counts(p) for p in deltas)
    assert (ops > 0).all(), ops  # unchanged, update, spawn and remove all occur
    widths = np.array([list(residual_widths(p)) for p in deltas])
    assert (widths == 1).any() and (widths == 2).any()
    grew = [c for c in VALID if c["baseline_state"] is not None
            and codec.live_span(c["state"]) > len(c["baseline_state"])]
    assert grew
    reused = [c for c in VALID if c["baseline_state"] is not None and (
        (lambda b, s: bool(((b["kind"][:n] != 0) & (s["kind"][:n] != 0)
                            & (b["gen"][:n] != s["gen"][:n])).any()))(
            c["baseline_state"], c["state"]) if (n := min(len(c["baseline_state"]),
                                                          len(c["state"]))) else False)]
    assert reused
    assert len(REJECTED) >= 100


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_valid_payload_decodes_to_the_python_state(case, js_results):
    res = js_results[case["name"]]
    assert res["ok"], f"codec.js rejected a valid payload: {res['error']}"
    got = js_state(res)
    assert res["span"] == len(case["expected_state"]) == len(got)
    assert codec.states_equal(got, case["state"])
    assert codec.states_equal(got, case["expected_state"])
    body = body_of(case["payload_bytes"])
    assert res["rate"] == body[0]
    assert res["elapsed"] == int.from_bytes(body[1:3], "little")
    assert res["keyframe"] == bool(case["payload_bytes"][0] & codec.FLAG_KEYFRAME)


@pytest.mark.parametrize("case", REJECTED, ids=[c["name"] for c in REJECTED])
def test_corrupted_payload_is_rejected_by_both(case, js_results):
    res = js_results[case["name"]]
    assert not res["ok"], "codec.js accepted a payload the Python decoder rejects"
    assert res["codecError"], f"rejected, but not with CodecError: {res['error']}"


@pytest.mark.parametrize("case", ACCEPTED_MUTANTS, ids=[c["name"] for c in ACCEPTED_MUTANTS])
def test_mutant_accepted_by_python_decodes_the_same_in_js(case, js_results):
    # A bit flip in a raw body can land on a value (a residual, a position) and still be a
    # valid payload; then both decoders must agree on what it says.
    res = js_results[case["name"]]
    assert res["ok"], f"codec.js rejected what Python accepts: {_describe(res)}"
    assert codec.states_equal(js_state(res), case["expected_state"])


# -- chunked snapshots (interest management) -----------------------------------------------------
#
# Sessions recorded from a real in-process `Room` with interest enabled (the server's own
# chunk encoder and per-client bookkeeping, server/interestroom.py): players walking across
# a grid of cells under a byte budget (far cells sent less often, so cells have their own
# baselines), projectiles fired and expiring (`gone`), NPCs crossing the edge of interest
# (`left` and enters), acks lost or late, snapshots skipped by the delivery and acks of 0
# (both answered by a reset with keyframe chunks). Each client's frames are applied to the
# Python reference `proto.chunks.ChunkMirror`; chunks.js's `ChunkMirror` must end every
# step with the same view (slot, record, as_of), the same removals, the same member list of
# every cell (the baselines of the next delta chunks), the same count of skipped members,
# and reject exactly the snapshots Python rejects (mutants: flipped bits, truncations,
# baselines the client never had, a slot in two chunks, a lost personal part). Hand-made
# sessions (`_crafted_sessions`) pin each rule of the chunk layout on its own.

CHUNK_NODE_SCRIPT = """\
import { readFileSync } from "node:fs";

const { ChunkMirror } = await import(process.argv[2]);
const { CodecError } = await import(process.argv[3]);
const sessions = JSON.parse(readFileSync(process.argv[4], "utf8"));
const hex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const out = [];
for (const s of sessions) {
  const m = new ChunkMirror(s.rate, s.posScale, s.keep);
  const steps = [];
  for (const f of s.frames) {
    let r;
    try {
      const applied = await m.apply(f.tick, f.chunks.map(hex), hex(f.personal));
      r = { ok: true, applied };
    } catch (err) {
      r = { ok: false, codecError: err instanceof CodecError,
            error: `${err.name}: ${err.message}` };
    }
    const v = m.view();
    const k = m.kept.get(m.tick);
    const cells = k ? [...k.cells].sort((a, b) => a[0] - b[0])
                                   .map(([c, mem]) => [c, Array.from(mem)]) : [];
    steps.push({ ...r, slots: v.slots, words: Array.from(v.words), asOf: v.asOf,
                 left: Array.from(m.left), gone: Array.from(m.gone), ack: m.ackTick,
                 skipped: m.skipped, cells });
  }
  out.push(steps);
}
process.stdout.write(JSON.stringify(out));
"""

CHUNKS_JS = ROOT / "client_demo" / "web" / "chunks.js"


def _chunk_params(**extra: object):
    from sim.params import params_from_mapping

    table = {
        # 6000 units needs a position scale of 8 (not the arena's 16).
        "world": {"width": 6000.0, "height": 6000.0, "capacity": 600, "seed": 7},
        "room": {"max_players": 8},
        "npc": {"count": 400, "speed": 400.0, "turn_interval_ticks": 9},
        "player": {"max_speed": 600.0, "accel": 100000.0, "friction": 0.0},
        "projectile": {"enabled": True, "max": 64, "lifetime_s": 0.3},
        "interest": {"enabled": True, "radius": 700.0, "margin": 100.0, "cell": 350.0,
                     "budget_kbps": 3.0},
    }
    for dotted, value in extra.items():
        section, key = dotted.split(".")
        table[section][key] = value
    return params_from_mapping(table)


def _record_room_session(seed: int, ticks: int, policy: str, params) -> list[dict]:
    """Run a Room with 3 players; return player 1's frames as {tick, chunks, personal}.
    `policy` says how player 1 acks: "every" (each snapshot), "lossy" (acks lost, late,
    sometimes 0) or "skips" (the delivery skips some of its snapshots)."""
    from proto import tickwire_pb2 as pb
    from server.room import Room

    rng = np.random.default_rng(seed)
    room = Room("conformance", params, now=0.0)
    rate = params.tick_rate
    pids = [1, 2, 3]
    for pid in pids:
        room.join(pid, f"p{pid}", 0.0)
    seqs = dict.fromkeys(pids, 0)
    acks = dict.fromkeys(pids, 0)
    heading = {pid: float(rng.uniform(0, 2 * np.pi)) for pid in pids}
    frames: list[dict] = []
    for t in range(1, ticks + 1):
        for pid in pids:
            if rng.random() < 0.1:
                heading[pid] = float(rng.uniform(0, 2 * np.pi))
            seqs[pid] += 1
            fire = bool(rng.random() < 0.3)
            cmd = pb.InputCmd(seq=seqs[pid], client_tick=t, move_x=float(np.cos(heading[pid])),
                              move_y=float(np.sin(heading[pid])), aim=heading[pid],
                              buttons=1 if fire else 0)
            room.submit(pid, pb.Input(ack_tick=acks[pid], cmds=[cmd]))
        result = room.tick(t / rate)
        for d in result.deliveries:
            if d.chunks is None:
                raise AssertionError("interest is enabled: deliveries must be chunked")
            if d.player_id == 1 and policy == "skips" and rng.random() < 0.12:
                d.on_skip()  # never written: the room must resync this seat
                continue
            raw = d.snapshot_shared + b"".join(d.chunks) + d.snapshot_personal
            snap = pb.ServerFrame.FromString(raw).snapshot
            if d.player_id != 1:
                acks[d.player_id] = snap.tick
                continue
            frames.append({"tick": snap.tick, "chunks": list(snap.chunks),
                           "personal": snap.personal})
            if policy == "lossy":
                roll = rng.random()
                if roll < 0.05:
                    acks[1] = 0  # the client asks for a keyframe
                elif roll < 0.55:
                    acks[1] = snap.tick
                # else: this ack is lost; the server keeps the older one
            else:
                acks[1] = snap.tick
    return frames


def _python_steps(frames: list[dict], rate: int, pos_scale: int, keep: int) -> list[dict]:
    from proto.chunks import ChunkMirror

    mirror = ChunkMirror(rate, pos_scale=pos_scale, keep=keep)
    steps = []
    for f in frames:
        try:
            applied = mirror.apply(f["tick"], f["chunks"], f["personal"])
            step = {"ok": True, "applied": bool(applied)}
        except CodecError:
            step = {"ok": False}
        slots, words, as_of = mirror.view()
        kept = mirror.kept.get(mirror.tick)
        cells = [[c, m.tolist()] for c, m in sorted(kept.cells.items())] if kept else []
        step.update(slots=slots.tolist(), words=words.reshape(-1).tolist(),
                    asOf=as_of.tolist(), left=np.asarray(mirror.left).tolist(),
                    gone=np.asarray(mirror.gone).tolist(), ack=mirror.ack_tick,
                    skipped=mirror.skipped, cells=cells)
        steps.append(step)
    return steps


def _chunk_mutants(rng: np.random.Generator, frames: list[dict]) -> list[tuple[str, list[dict]]]:
    """Sessions with one damaged snapshot: the intact prefix, the damaged one, and the two
    snapshots after it (which the mirror ignores until a reset)."""
    out = []
    picks = rng.choice(np.arange(3, len(frames)), size=min(14, len(frames) - 3), replace=False)
    for k in sorted(int(p) for p in picks):
        f = frames[k]
        prefix, after = frames[:k], frames[k + 1:k + 3]

        def variant(name: str, **change: object) -> None:
            out.append((f"{name}@{k}", [*prefix, {**f, **change}, *after]))  # noqa: B023

        chunks = f["chunks"]
        if chunks:
            i = int(rng.integers(0, len(chunks)))
            c = bytearray(chunks[i])
            at = int(rng.integers(0, len(c)))
            c[at] ^= 1 << int(rng.integers(0, 8))
            variant("chunk-bitflip", chunks=[*chunks[:i], bytes(c), *chunks[i + 1:]])
            variant("chunk-truncated", chunks=[*chunks[:i], chunks[i][:-1], *chunks[i + 1:]])
            variant("chunk-trailing", chunks=[*chunks[:i], chunks[i] + b"\x00", *chunks[i + 1:]])
            variant("chunk-twice", chunks=[*chunks, chunks[i]])
            variant("chunk-unknown-flag", chunks=[*chunks[:i], bytes([chunks[i][0] | 0x04])
                                                  + chunks[i][1:], *chunks[i + 1:]])
            variant("chunk-from-another-tick", tick=f["tick"] + 1)
        p = bytearray(f["personal"])
        at = int(rng.integers(0, len(p)))
        p[at] ^= 1 << int(rng.integers(0, 8))
        variant("personal-bitflip", personal=bytes(p))
        variant("personal-truncated", personal=f["personal"][:-1])
        variant("personal-missing", personal=b"")
    return out


def _rec(kind: int, gen: int, x: int, y: int, vx: int, vy: int, hp: int = 50) -> list[int]:
    return [x, y, vx & 0xFFFF, vy & 0xFFFF, hp, 0, kind | (gen << 8), 0]


def _raw_chunk(*, keyframe: bool, cell: int, elapsed: int, prev_ops: list[int],
               added: list[int], add_ops: list[int], spawns: np.ndarray | None = None,
               stray_op_bits: int = 0) -> bytes:
    """A chunk written byte by byte from the spec (no updates section, so no op 1), to
    break one rule at a time; `stray_op_bits` ORs bits into the last prev-ops byte."""
    def ops_bytes(ops: list[int]) -> bytearray:
        out = bytearray((len(ops) + 3) // 4)
        for i, op in enumerate(ops):
            out[i // 4] |= op << (2 * (i % 4))
        return out

    prev = ops_bytes(prev_ops)
    if stray_op_bits:
        prev[-1] |= stray_op_bits
    body = (cell.to_bytes(4, "little") + elapsed.to_bytes(2, "little")
            + len(prev_ops).to_bytes(2, "little") + bytes(prev)
            + len(added).to_bytes(2, "little")
            + b"".join(a.to_bytes(2, "little") for a in added) + bytes(ops_bytes(add_ops)))
    if spawns is not None:
        body += np.ascontiguousarray(np.asarray(spawns, dtype="<u2").T).tobytes()
    return bytes([codec.FLAG_KEYFRAME if keyframe else 0]) + body


def _crafted_sessions(rate: int, pos_scale: int) -> list[dict]:
    """Hand-made sessions, one rule of the chunk layout at a time, written with the
    reference encoder (`encode_chunk`) from two-tick world tables; every rule's outcome is
    asserted on the Python mirror here, and the JS mirror must then match it step by step.

    Cells: 0 holds slots 1, 2, 3 at tick 1; 1 holds 10; slot 20 sits in cell 2, which the
    client is not sent. Tick 2 (every cell against tick 1): 1 moves as predicted (op 0), 2
    is hit (op 1), 3 LEAVES cell 0 (op 3) and is ADDED to cell 1 with op 1 from its record
    at tick 1; a new entity spawns in slot 4 (added, op 2); 20 walks into cell 1 and is
    added with op 0 from its record at tick 1, which OUR snapshot 1 did not carry: it is
    SKIPPED (and sent whole in the personal part), yet it is a member of cell 1. Tick 3:
    cell 0 against tick 1 (its own baseline: the chunk of tick 2 is not acked), slot 2 now
    holds a new entity (previous member with op 2); cell 1 against tick 2 (previous members
    3, 10, 20: the skipped one included), 20 leaves the world (op 3, personal `gone`).
    Tick 4: cell 5 enters the interest with a keyframe chunk in a snapshot that is not a
    reset; cell 1 against tick 3. Tick 5: cell 0 against tick 3, cell 5 against tick 4."""
    from proto.chunks import encode_chunk, encode_personal

    cap = 32
    no_words = np.zeros((0, 8), "<u2")

    def personal(reset=False, left=(), gone=(), spawn=(), world=None) -> bytes:
        spawn = np.array(spawn, dtype=np.int64)
        return encode_personal(reset=reset, left=np.array(left, dtype=np.int64),
                               gone=np.array(gone, dtype=np.int64), spawn_slots=spawn,
                               spawn_words=world[spawn] if len(spawn) else no_words)

    def chunk(cell, prev, members, now, base, elapsed):
        return encode_chunk(cell, np.array(prev, dtype=np.int64),
                            np.array(members, dtype=np.int64), now, base,
                            elapsed_ticks=elapsed, tick_rate=rate, pos_scale=pos_scale)

    w = {t: np.zeros((cap, 8), dtype="<u2") for t in range(1, 6)}
    w[1][1] = _rec(2, 1, 1000, 1000, 320, -160)
    w[1][2] = _rec(2, 1, 1200, 1100, 0, 0)
    w[1][3] = _rec(2, 2, 1300, 1200, 640, 0)
    w[1][10] = _rec(2, 1, 3000, 1000, 0, 0)
    w[1][20] = _rec(2, 3, 3100, 3000, 0, -320)

    def moved(t_from: int, slot: int, ticks: int, **change: int) -> np.ndarray:
        r = codec.predict_words(w[t_from][slot:slot + 1], ticks, rate, pos_scale)[0].copy()
        for word, v in change.items():
            r[{"hp": 4, "x": 0}[word]] = v
        return r

    for t in range(2, 6):
        w[t][1] = moved(t - 1, 1, 1)
        w[t][10] = w[t - 1][10]
    w[2][2], w[2][3] = moved(1, 2, 1, hp=20), moved(1, 3, 1, hp=40)
    w[2][4] = _rec(3, 1, 1050, 1050, 900, 900, hp=1)
    w[2][20] = moved(1, 20, 1)
    w[3][2] = _rec(2, 2, 1150, 1150, 0, 0)  # slot 2 reused by a new entity
    w[3][3], w[3][4] = moved(2, 3, 1), moved(2, 4, 1)  # 20 is gone
    w[4][2], w[4][3], w[4][4] = w[3][2], moved(3, 3, 1, hp=35), moved(3, 4, 1)
    w[4][25] = _rec(2, 1, 5000, 5000, -64, 64)
    w[5][2], w[5][3], w[5][4], w[5][25] = w[4][2], w[4][3], moved(4, 4, 1), moved(4, 25, 1)

    frames = [
        {"tick": 1, "chunks": [chunk(0, [], [1, 2, 3], w[1], None, 0),
                               chunk(1, [], [10], w[1], None, 0)],
         "personal": personal(reset=True, world=w[1])},
        {"tick": 2, "chunks": [chunk(0, [1, 2, 3], [1, 2, 4], w[2], w[1], 1),
                               chunk(1, [10], [3, 10, 20], w[2], w[1], 1)],
         "personal": personal(spawn=[20], world=w[2])},
        {"tick": 3, "chunks": [chunk(0, [1, 2, 3], [1, 2, 4], w[3], w[1], 2),
                               chunk(1, [3, 10, 20], [3, 10], w[3], w[2], 1)],
         "personal": personal(gone=[20], world=w[3])},
        {"tick": 4, "chunks": [chunk(1, [3, 10], [3, 10], w[4], w[3], 1),
                               chunk(5, [], [25], w[4], None, 0)],
         "personal": personal(world=w[4])},
        {"tick": 5, "chunks": [chunk(0, [1, 2, 4], [1, 2, 4], w[5], w[3], 2),
                               chunk(5, [25], [25], w[5], w[4], 1)],
         "personal": personal(world=w[5])},
    ]
    steps = _python_steps(frames, rate, pos_scale, 64)
    assert all(st["ok"] and st["applied"] for st in steps)
    assert [st["skipped"] for st in steps] == [0, 1, 1, 1, 1]  # slot 20 at tick 2
    assert [st["cells"] for st in steps] == [
        [[0, [1, 2, 3]], [1, [10]]],
        [[0, [1, 2, 4]], [1, [3, 10, 20]]],
        [[0, [1, 2, 4]], [1, [3, 10]]],
        [[1, [3, 10]], [5, [25]]],
        [[0, [1, 2, 4]], [5, [25]]]]
    # The view: slot -> the tick of its record (cell 0 is not sent at tick 4, cell 1 not
    # at tick 5: their members stay as of the last tick their cell came).
    as_of = [{1: 1, 2: 1, 3: 1, 10: 1},
             {1: 2, 2: 2, 3: 2, 4: 2, 10: 2, 20: 2},
             {1: 3, 2: 3, 3: 3, 4: 3, 10: 3},
             {1: 3, 2: 3, 3: 4, 4: 3, 10: 4, 25: 4},
             {1: 5, 2: 5, 3: 4, 4: 5, 10: 4, 25: 5}]
    for st, want in zip(steps, as_of, strict=True):
        assert st["slots"] == sorted(want), st["slots"]
        assert st["asOf"] == [want[sl] for sl in sorted(want)]
        assert st["words"] == [v for sl in sorted(want) for v in w[want[sl]][sl].tolist()]
    sessions = [{"name": "crafted-layout", "frames": frames}]

    # Ops: which rule each tick exercises (read back from the encoded bytes).
    def ops_of(c: bytes) -> tuple[list[int], list[int]]:
        n_prev = int.from_bytes(c[7:9], "little")
        at = 9 + (n_prev + 3) // 4
        n_add = int.from_bytes(c[at:at + 2], "little")
        prev = codec.unpack_ops(c[9:9 + (n_prev + 3) // 4], n_prev).tolist()
        a = at + 2 + 2 * n_add
        return prev, codec.unpack_ops(c[a:a + (n_add + 3) // 4], n_add).tolist()

    assert ops_of(frames[1]["chunks"][0]) == ([0, 1, 3], [2])
    assert ops_of(frames[1]["chunks"][1]) == ([0], [1, 0])
    # Slot 1 is op 1 against tick 1: two one-tick roundings are not one two-tick rounding.
    assert ops_of(frames[2]["chunks"][0]) == ([1, 2, 3], [2])
    assert ops_of(frames[2]["chunks"][1]) == ([0, 0, 3], [])

    # One broken rule per session: the valid prefix, the broken snapshot, the next one.
    def bad(name: str, at: int, **change: object) -> None:
        mutated = [*frames[:at], {**frames[at], **change}, *frames[at + 1:at + 2]]
        sessions.append({"name": f"crafted-{name}", "frames": mutated, "reject_at": at})

    spawn4 = w[2][[4]]
    bad("keyframe-with-previous-members", 1, chunks=[_raw_chunk(
        keyframe=True, cell=0, elapsed=0, prev_ops=[2], added=[], add_ops=[], spawns=spawn4)])
    bad("keyframe-with-op-0", 1, chunks=[_raw_chunk(
        keyframe=True, cell=3, elapsed=0, prev_ops=[], added=[4], add_ops=[0])])
    bad("added-op-3", 1, chunks=[_raw_chunk(
        keyframe=False, cell=0, elapsed=1, prev_ops=[0, 0, 0], added=[4], add_ops=[3])])
    # Slot 2 "left" and added back in one chunk (else a slot twice would reject it anyway).
    bad("added-was-a-previous-member", 1, chunks=[_raw_chunk(
        keyframe=False, cell=0, elapsed=1, prev_ops=[0, 3, 0], added=[2], add_ops=[0])])
    bad("added-not-ascending", 1, chunks=[_raw_chunk(
        keyframe=False, cell=1, elapsed=1, prev_ops=[0], added=[20, 3], add_ops=[0, 0])])
    bad("nprev-differs-from-the-cell-at-b", 1, chunks=[_raw_chunk(
        keyframe=False, cell=0, elapsed=1, prev_ops=[0, 0], added=[], add_ops=[])])
    bad("cell-not-in-snapshot-b", 1, chunks=[_raw_chunk(
        keyframe=False, cell=7, elapsed=1, prev_ops=[], added=[1], add_ops=[0])])
    bad("baseline-not-kept", 1, chunks=[_raw_chunk(
        keyframe=False, cell=0, elapsed=5, prev_ops=[0, 0, 0], added=[], add_ops=[])])
    bad("prev-op-bits-past-the-count", 1, chunks=[_raw_chunk(
        keyframe=False, cell=0, elapsed=1, prev_ops=[0, 0, 3], added=[], add_ops=[],
        stray_op_bits=0xC0)])
    # Cell 0 twice, once with every member gone: no slot twice, only the cell.
    bad("cell-twice", 1, chunks=[*frames[1]["chunks"], _raw_chunk(
        keyframe=False, cell=0, elapsed=1, prev_ops=[3, 3, 3], added=[], add_ops=[])])
    # The server broke its promise: the skipped member 20 is not in the personal part of
    # tick 2, so tick 3's chunk of cell 1 names a previous member (20, op 0 here) whose
    # record snapshot 2 did not carry.
    no_spawn = {**frames[1], "personal": personal(world=w[2])}
    sessions.append({"name": "crafted-previous-member-not-carried-at-b", "reject_at": 2,
                     "frames": [frames[0], no_spawn, {**frames[2], "chunks": [_raw_chunk(
                         keyframe=False, cell=1, elapsed=1, prev_ops=[0, 0, 0], added=[],
                         add_ops=[])]}, frames[3]]})
    # Positive controls for the byte writer: the same shapes, valid, are accepted.
    sessions.append({"name": "crafted-raw-valid", "reject_at": None, "frames": [
        frames[0], {**frames[1], "chunks": [
            _raw_chunk(keyframe=False, cell=0, elapsed=1, prev_ops=[0, 0, 3], added=[4],
                       add_ops=[2], spawns=spawn4),
            _raw_chunk(keyframe=True, cell=3, elapsed=0, prev_ops=[], added=[7],
                       add_ops=[2], spawns=w[2][[4]])]}]})
    sessions.append({"name": "crafted-skipped-member-with-op-3-next", "reject_at": None,
                     "frames": [frames[0], no_spawn, {**frames[2], "chunks": [_raw_chunk(
                         keyframe=False, cell=1, elapsed=1, prev_ops=[0, 0, 3], added=[],
                         add_ops=[])]}]})
    for sess in sessions[1:]:
        got = _python_steps(sess["frames"], rate, pos_scale, 64)
        at = sess.pop("reject_at")
        want_ok = [at is None or i < at for i in range(len(got))]
        if at is not None and at + 1 < len(got):
            want_ok[at + 1] = True  # ignored while waiting for a reset
        assert [st["ok"] for st in got] == want_ok, sess["name"]
        if at is not None and at + 1 < len(got):
            assert not got[at + 1]["applied"], sess["name"]
    return sessions


def build_chunk_sessions() -> list[dict]:
    rng = np.random.default_rng(20261127)
    params = _chunk_params()
    rate = params.tick_rate
    pos_scale = codec.pos_scale_for(params.world_width, params.world_height)
    keep = max(64, 2 * rate)
    sessions = []
    for i, policy in enumerate(["every", "lossy", "skips"]):
        frames = _record_room_session(100 + i, 75, policy, params)
        sessions.append({"name": f"room-{policy}", "frames": frames})
        if policy == "lossy":
            for name, mutated in _chunk_mutants(rng, frames[:40]):
                sessions.append({"name": f"mutant-{name}", "frames": mutated})
    # No budget (every interest cell every tick) and the arena's position scale.
    # Big cells (~25 NPCs each) make bodies worth deflating.
    small = _chunk_params(**{"world.width": 3000.0, "world.height": 3000.0,
                             "interest.budget_kbps": 0.0, "npc.count": 480,
                             "interest.cell": 600.0, "interest.radius": 900.0})
    frames = _record_room_session(200, 40, "lossy", small)
    sessions.append({"name": "room-no-budget-scale-16", "frames": frames, "params": small})
    # The server sends chunks raw today; the spec allows each to be deflated (flags bit 1):
    # the first session again with every chunk deflated.
    sessions.append({"name": "room-every-deflated", "frames": [
        {**f, "chunks": [bytes([c[0] | codec.FLAG_DEFLATE]) + zlib.compress(c[1:], 1)
                         if not c[0] & codec.FLAG_DEFLATE else c for c in f["chunks"]]}
        for f in sessions[0]["frames"]]})
    for name, mutated in _chunk_mutants(rng, sessions[-1]["frames"][:30]):
        sessions.append({"name": f"mutant-deflated-{name}", "frames": mutated})
    sessions += _crafted_sessions(rate, pos_scale)
    for s in sessions:
        p = s.pop("params", params)
        s["rate"] = p.tick_rate
        s["posScale"] = codec.pos_scale_for(p.world_width, p.world_height)
        s["keep"] = keep
        s["expected"] = _python_steps(s["frames"], s["rate"], s["posScale"], keep)
    assert pos_scale == 8
    return sessions


CHUNK_SESSIONS = build_chunk_sessions()


@pytest.fixture(scope="module")
def js_chunk_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH (needed to run client_demo/web/chunks.js)")
    tmp = tmp_path_factory.mktemp("chunksjs")
    data = tmp / "sessions.json"
    data.write_text(json.dumps([
        {"rate": s["rate"], "posScale": s["posScale"], "keep": s["keep"],
         "frames": [{"tick": f["tick"], "chunks": [c.hex() for c in f["chunks"]],
                     "personal": f["personal"].hex()} for f in s["frames"]]}
        for s in CHUNK_SESSIONS]), encoding="utf-8")
    script = tmp / "apply_sessions.mjs"
    script.write_text(CHUNK_NODE_SCRIPT, encoding="utf-8")
    proc = subprocess.run([node, str(script), CHUNKS_JS.as_uri(), CODEC_JS.as_uri(), str(data)],
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 and "DecompressionStream is not defined" in proc.stderr:
        _unavailable("this node has no DecompressionStream (needs Node >= 18)")
    assert proc.returncode == 0, f"node failed:\n{proc.stderr}"
    results = json.loads(proc.stdout)
    return {s["name"]: r for s, r in zip(CHUNK_SESSIONS, results, strict=True)}


def test_chunk_sessions_cover_the_format():
    """The recorded sessions hold what the brief asks the vectors to cover."""
    from proto.chunks import decode_personal

    frames = [f for s in CHUNK_SESSIONS if s["name"].startswith("room") for f in s["frames"]]
    parts = [decode_personal(f["personal"]) for f in frames]
    assert sum(p.reset for p in parts) >= 4, "keyframes: joins, acks of 0 and skips reset"
    assert sum(len(p.left) for p in parts) > 0, "entities left the interest"
    assert sum(len(p.gone) for p in parts) > 0, "entities left the world (projectiles)"
    assert sum(len(p.spawn_slots) for p in parts) > 0, "personal spawns"
    chunks = [c for f in frames for c in f["chunks"]]
    keyframe = [c for c in chunks if c[0] & codec.FLAG_KEYFRAME]
    assert keyframe and len(keyframe) < len(chunks), "keyframe and delta chunks"
    assert any(c[0] & codec.FLAG_DEFLATE for c in chunks)
    # Per-cell baselines: in one snapshot, delta chunks against different ticks.
    def elapsed(c: bytes) -> int:
        body = zlib.decompress(c[1:]) if c[0] & codec.FLAG_DEFLATE else c[1:]
        return int.from_bytes(body[4:6], "little")

    assert any(len({elapsed(c) for c in f["chunks"] if not c[0] & codec.FLAG_KEYFRAME}) > 1
               for f in frames), "cells of one snapshot against different baselines"
    # The chunk layout's parts, as the real server writes them.
    prev_ops, add_ops = [], []
    for c in chunks:
        body = zlib.decompress(c[1:]) if c[0] & codec.FLAG_DEFLATE else c[1:]
        n_prev = int.from_bytes(body[6:8], "little")
        at = 8 + (n_prev + 3) // 4
        prev_ops += codec.unpack_ops(body[8:at], n_prev).tolist()
        n_add = int.from_bytes(body[at:at + 2], "little")
        a = at + 2 + 2 * n_add
        add_ops += codec.unpack_ops(body[a:a + (n_add + 3) // 4], n_add).tolist()
    assert {0, 1, 2, 3} <= set(prev_ops), "previous members: unchanged, updated, new, left"
    assert {0, 1, 2} <= set(add_ops), "added members: from their record at b, and whole"
    assert any(not f["personal"][0] & 1 and any(c[0] & codec.FLAG_KEYFRAME for c in f["chunks"])
               for f in frames), "a keyframe chunk in a snapshot that is not a reset"
    room = [s for s in CHUNK_SESSIONS if s["name"].startswith("room")]
    assert sum(s["expected"][-1]["skipped"] for s in room) > 0, "added members skipped at b"
    steps = [st for s in CHUNK_SESSIONS for st in s["expected"]]
    assert any(st["ok"] and not st["applied"] for st in steps), "ignored while awaiting reset"
    assert sum(not st["ok"] for st in steps) >= 10, "mutants Python rejects"
    # Lost acks leave entities out of date in the view (far cells under the budget too).
    assert any(st["asOf"] and min(st["asOf"]) < max(st["asOf"]) for st in steps)


@pytest.mark.parametrize("session", CHUNK_SESSIONS, ids=[s["name"] for s in CHUNK_SESSIONS])
def test_js_chunk_mirror_equals_the_python_mirror(session, js_chunk_results):
    got = js_chunk_results[session["name"]]
    assert len(got) == len(session["expected"])
    for i, (js, py) in enumerate(zip(got, session["expected"], strict=True)):
        where = f"{session['name']} step {i} (tick {session['frames'][i]['tick']})"
        assert js["ok"] == py["ok"], f"{where}: JS {js.get('error') or 'accepted'}, Python " \
                                     f"{'accepted' if py['ok'] else 'rejected'}"
        if not js["ok"]:
            assert js["codecError"], f"{where}: rejected, but not with CodecError: {js['error']}"
        else:
            assert js["applied"] == py["applied"], where
        for key in ("slots", "words", "asOf", "left", "gone", "ack", "skipped", "cells"):
            assert js[key] == py[key], f"{where}: {key} differs"
