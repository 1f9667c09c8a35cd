"""Laws of chunked snapshots (interest management), checked with hypothesis.

A random world (entities moving, turning, jumping, dying, spawning into reused slots; two
players moving and teleporting; hits on the players) runs through the server side
(``server.interestroom.InterestRoom``) and each client's ``proto.chunks.ChunkMirror``,
over lost snapshots (the delivery skips one), lost and late acks, and client resets
(ack 0). After every snapshot a client applies:

- every record in its view equals the server's world state at that record's tick;
- its view holds only entities of its interest set now (same kind and generation);
- without a budget, its view IS the world restricted to its interest set at this tick;
- the view equals the server's model of it (what the server will send removals for);
- with a budget, no in-interest cell waits longer than a second.

Decoders fed garbage or mutated valid bytes raise CodecError and nothing else.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import codec
from proto import tickwire_pb2 as pb
from proto.chunks import (
    ChunkMirror,
    CodecError,
    decode_chunk,
    decode_personal,
    encode_chunk,
    encode_personal,
)
from server.interestroom import InterestRoom
from sim.params import Params

RATE = 30
CAPACITY = 48
PLAYERS = (0, 1)


def interest_params(budget_kbps: float, width: float, max_players: int = 2) -> Params:
    """A small interest world's parameters (also test_interest_vector's)."""
    return Params().with_changes({
        "world.width": width, "world.height": width, "world.capacity": 64,
        "npc.count": 0, "room.max_players": max_players, "projectile.max": 0,
        "interest.enabled": True,
        "interest.cell": 150.0, "interest.radius": 300.0, "interest.margin": 60.0,
        "interest.budget_kbps": budget_kbps})


def assert_view_is_world(mirror: ChunkMirror, states: dict[int, np.ndarray]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every record of the client's view is the world's state at the tick it came in;
    returns the view (slots, words, as_of)."""
    slots, view_words, as_of = mirror.view()
    for t in np.unique(as_of).tolist():
        at = as_of == t
        assert (view_words[at] == states[t].view("<u2").reshape(-1, 8)[slots[at]]).all()
    return slots, view_words, as_of


class _World:
    """A small world with the fields a snapshot needs, moved by a seeded generator."""

    def __init__(self, rng: np.random.Generator, width: float, churn: float, jumps: float):
        self.rng, self.width, self.churn, self.jumps = rng, width, churn, jumps
        self.pos = rng.uniform(0, width, (CAPACITY, 2)).astype(np.float32)
        self.vel = rng.uniform(-120, 120, (CAPACITY, 2)).astype(np.float32)
        self.alive = rng.random(CAPACITY) < 0.7
        self.alive[list(PLAYERS)] = True
        self.kind = np.where(self.alive, 2, 0).astype(np.uint8)
        self.kind[list(PLAYERS)] = 1
        self.gen = np.ones(CAPACITY, dtype=np.uint8)
        self.hp = rng.integers(1, 100, CAPACITY)

    def step(self) -> None:
        rng, n = self.rng, CAPACITY
        turn = rng.random(n) < 0.1
        self.vel[turn] = rng.uniform(-150, 150, (int(turn.sum()), 2))
        self.pos += self.vel / RATE
        jump = rng.random(n) < self.jumps
        self.pos[jump] = rng.uniform(0, self.width, (int(jump.sum()), 2))
        np.clip(self.pos, 0, self.width - 0.01, out=self.pos)
        self.hp = np.where(rng.random(n) < 0.05, rng.integers(1, 100, n), self.hp)
        die = (rng.random(n) < self.churn) & self.alive
        die[list(PLAYERS)] = False
        self.alive[die] = False
        self.kind[die] = 0
        born = (rng.random(n) < self.churn) & ~self.alive & ~die
        self.alive[born] = True
        self.kind[born] = rng.choice([2, 3], int(born.sum()))
        self.gen[born] += 1
        self.pos[born] = rng.uniform(0, self.width, (int(born.sum()), 2))

    def quantize(self, pos_scale: int) -> np.ndarray:
        n = CAPACITY
        return codec.quantize(pos=self.pos, vel=self.vel, hp=self.hp, score=np.zeros(n),
                              kind=self.kind, gen=self.gen, aim=np.zeros(n),
                              flags=np.zeros(n, dtype=np.uint8), alive=self.alive,
                              pos_scale=pos_scale)


def _frame(part) -> pb.Snapshot:
    """The bytes a client receives, parsed the way every protobuf client parses them."""
    data = pb.ServerFrame(snapshot=pb.Snapshot(tick=1)).SerializeToString()
    data += b"".join(part.chunks)
    data += pb.ServerFrame(snapshot=pb.Snapshot(personal=part.personal)).SerializeToString()
    frame = pb.ServerFrame()
    frame.ParseFromString(data)
    return frame.snapshot


@given(seed=st.integers(0, 2**32 - 1),
       budget=st.sampled_from([0.0, 0.0, 0.3, 2.0]),
       width=st.sampled_from([1200.0, 5000.0]),
       lose=st.sampled_from([0.0, 0.05]),
       ack=st.sampled_from([1.0, 0.5, 0.1]),
       client_reset=st.sampled_from([0.0, 0.02]),
       churn=st.sampled_from([0.0, 0.03]),
       jumps=st.sampled_from([0.0, 0.02]),
       ticks=st.integers(20, 90))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_client_view_is_the_world_restricted_to_its_interest(
        seed, budget, width, lose, ack, client_reset, churn, jumps, ticks):
    rng = np.random.default_rng(seed)
    params = interest_params(budget, width)
    scale = codec.pos_scale_for(width, width)
    history = codec.SnapshotHistory(size=64, tick_rate=RATE, pos_scale=scale)
    room = InterestRoom(params, CAPACITY, history)
    world = _World(rng, width, churn, jumps)
    mirrors = {row: ChunkMirror(RATE, scale, keep=64) for row in PLAYERS}
    acks = dict.fromkeys(PLAYERS, 0)
    lost = dict.fromkeys(PLAYERS, False)
    hit_at: dict[tuple[int, int], int] = {}
    states: dict[int, np.ndarray] = {}
    grid = room.grid
    for row in PLAYERS:
        room.join(row)
    for tick in range(1, ticks + 1):
        world.step()
        if rng.random() < 0.05:  # a player teleports: whole blocks of cells enter and leave
            world.pos[rng.choice(PLAYERS)] = rng.uniform(0, width, 2)
        shooters = rng.choice(CAPACITY, 2)
        targets = rng.choice(PLAYERS, 2)
        hit = rng.random(2) < 0.1
        hits = (shooters[hit].astype(np.int64), targets[hit].astype(np.int64))
        for s, t in zip(*hits, strict=True):
            hit_at[(int(t), int(s))] = tick
        for (t, s) in [key for key in hit_at if not world.alive[key[1]]]:
            del hit_at[(t, s)]  # a hitter that died is forgotten, even if its slot is reused
        state = world.quantize(scale)
        states[tick] = state
        history.push(tick, state)
        parts = room.deliveries(tick, state, world.pos, world.alive, list(PLAYERS),
                                list(PLAYERS), [acks[r] for r in PLAYERS], hits)
        assert room.oldest_age_s <= 1.0 + 1e-9  # nothing starves
        words = state.view("<u2").reshape(-1, 8)
        for row, part in zip(PLAYERS, parts, strict=True):
            mirror = mirrors[row]
            if rng.random() < lose:
                room.skipped(row, tick)  # the delivery skipped it
                lost[row] = True
                continue
            snap = _frame(part)
            applied = mirror.apply(tick, list(snap.chunks), snap.personal)
            if rng.random() < client_reset:  # the client lost its state: it asks for a reset
                mirror.clear()
                mirror.waiting_reset = True
                mirror.ack_tick = 0
                acks[row] = 0
                continue
            if rng.random() < ack and mirror.ack_tick:
                acks[row] = max(acks[row], mirror.ack_tick)
            if not applied:
                continue
            slots, view_words, as_of = assert_view_is_world(mirror, states)
            # The interest set, computed here from the server's interest cells.
            client = room.clients[row]
            cx, cy = grid.cell_xy(world.pos)
            in_cells = np.isin(cy * grid.columns + cx, client.cells.cells) & world.alive
            interest = in_cells.copy()
            interest[row] = True
            for (t, s), when in hit_at.items():
                if t == row and when > tick - RATE and world.alive[s]:
                    interest[s] = True
            expected = np.flatnonzero(interest)
            assert np.isin(slots, expected).all()
            assert (view_words[:, 6] == words[slots, 6]).all()  # same entity, not a reuse
            # The server's model of the view (what it sends removals for) holds the view;
            # it holds exactly the view unless a snapshot was lost (then perhaps more,
            # which costs a removal the client ignores).
            model = client.view_slots
            assert np.isin(slots, model).all()
            if not lost[row]:
                assert np.array_equal(model, slots)
            if budget == 0:
                assert np.array_equal(slots, expected)
                assert (as_of == tick).all()


def _kept(slots, words, cells) -> dict:
    from proto.chunks import Carried, Kept
    return Kept(Carried(np.asarray(slots, dtype=np.int64), np.asarray(words, dtype="<u2")),
                {c: np.asarray(m, dtype=np.int64) for c, m in cells.items()})


@given(data=st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_chunk_and_personal_decoders_raise_only_codec_error_on_garbage(data):
    # Either outcome is fine (a valid parse must be well formed); any other exception
    # type fails the test.
    kept = {5: _kept([1, 4, 7], np.ones((3, 8)), {0: [1, 4, 7], 3: [4]})}
    with contextlib.suppress(CodecError):
        got = decode_chunk(data, tick=9, tick_rate=RATE, kept=kept)
        assert (np.diff(got.slots) > 0).all() and len(got.words) == len(got.slots)
    with contextlib.suppress(CodecError):
        part = decode_personal(data)
        assert len(part.spawn_words) == len(part.spawn_slots)


def _chunk_world(rng, capacity=600):
    """A world now and at a baseline, a cell's members at both, and a client's snapshot of
    the baseline (every previous member carried, plus some others)."""
    base = rng.integers(0, 65536, (capacity, 8)).astype("<u2")
    base[:, 6] = (base[:, 6] & 0xFF00) | rng.integers(1, 4, capacity).astype("<u2")
    prev = np.sort(rng.choice(capacity, int(rng.integers(0, 30)), replace=False))
    others = np.setdiff1d(np.arange(capacity), prev)
    stay = prev[rng.random(len(prev)) < 0.7]
    added = np.sort(rng.choice(others, int(rng.integers(0, 20)), replace=False))
    members = np.union1d(stay, added)
    return base, prev, members


@given(seed=st.integers(0, 2**32 - 1), elapsed=st.integers(1, 80),
       scale=st.sampled_from([16, 8, 4, 1]))
@settings(max_examples=200, deadline=None)
def test_a_delta_chunk_decodes_to_the_state_it_encodes(seed, elapsed, scale):
    rng = np.random.default_rng(seed)
    base, prev, members = _chunk_world(rng)
    now = codec.predict_words(base, elapsed, RATE, scale)
    moved = rng.random(len(now)) < 0.3
    now[moved, 0] += rng.integers(0, 300, int(moved.sum())).astype("<u2")
    now[rng.random(len(now)) < 0.1, 6] += 256  # a new generation in that slot: a spawn
    others = np.setdiff1d(members, prev)
    had_others = others[rng.random(len(others)) < 0.6]  # added members the client had at b
    carried = np.union1d(prev, had_others)
    kept = {100: _kept(carried, base[carried], {7: prev})}
    chunk = encode_chunk(7, prev, members, now, base, elapsed_ticks=elapsed, tick_rate=RATE,
                         pos_scale=scale)
    got = decode_chunk(chunk, tick=100 + elapsed, tick_rate=RATE, kept=kept, pos_scale=scale)
    assert np.array_equal(got.members, members)
    same = (now[members, 6] == base[members, 6])
    skipped = ~np.isin(members, prev) & same & ~np.isin(members, had_others)
    assert np.array_equal(got.slots, members[~skipped])
    assert np.array_equal(got.words, now[members[~skipped]])
    assert got.skipped == int(skipped.sum())


@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 10_000), flip=st.integers(0, 255))
@settings(max_examples=300, deadline=None)
def test_mutated_chunks_decode_or_raise_codec_error(seed, cut, flip):
    rng = np.random.default_rng(seed)
    base, prev, members = _chunk_world(rng)
    now = base.copy()
    now[:, 0] += rng.integers(0, 3, len(now)).astype("<u2")
    chunk = encode_chunk(3, prev, members, now, base, elapsed_ticks=2, tick_rate=RATE)
    kept = {7: _kept(np.union1d(prev, members), base[np.union1d(prev, members)], {3: prev})}
    mutated = bytearray(chunk)
    mutated[cut % len(mutated)] ^= flip
    for payload in (bytes(mutated), chunk[: cut % (len(chunk) + 1)]):
        with contextlib.suppress(CodecError):
            got = decode_chunk(payload, tick=9, tick_rate=RATE, kept=kept)
            assert (np.diff(got.slots) > 0).all() and len(got.words) == len(got.slots)
    slots = np.union1d(prev, members)[:8]
    personal = encode_personal(reset=False, left=slots[:2], gone=slots[2:3],
                               spawn_slots=slots[3:], spawn_words=now[slots[3:]])
    mutated = bytearray(personal)
    mutated[cut % len(mutated)] ^= flip
    for payload in (bytes(mutated), personal[: cut % (len(personal) + 1)]):
        with contextlib.suppress(CodecError):
            part = decode_personal(payload)
            assert len(part.spawn_words) == len(part.spawn_slots)


@given(seed=st.integers(0, 2**32 - 1), chunks=st.integers(1, 12),
       scale=st.sampled_from([16, 8, 4]))
@settings(max_examples=100, deadline=None)
def test_the_batch_encoder_gives_the_bytes_of_one_chunk_at_a_time(seed, chunks, scale):
    from proto.chunks import chunk_ops, encode_chunks
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(chunks):
        base, prev, members = _chunk_world(rng, 300)
        keyframe = rng.random() < 0.2
        if keyframe:
            prev = prev[:0]
        if not len(prev) and not len(members):
            members = np.array([5])
        now = codec.predict_words(base, 3, RATE, scale)
        now[rng.random(len(now)) < 0.3, 0] += 7
        specs.append((int(rng.integers(0, 900)), prev, members, now,
                      None if keyframe else base))
    parts = [chunk_ops(p, m, n, b) for _, p, m, n, b in specs]
    batch = encode_chunks(
        np.array([c for c, *_ in specs]), np.array([0 if b is None else 3 for *_, b in specs]),
        np.array([len(p) for _, p, *_ in specs]),
        np.array([len(r) - len(p) for (r, _, _), (_, p, *_) in zip(parts, specs, strict=True)]),
        np.concatenate([r for r, _, _ in parts]), np.concatenate([i for _, i, _ in parts]),
        np.concatenate([s for _, _, s in parts]),
        np.concatenate([n[r] for (r, _, _), (_, _, _, n, _) in zip(parts, specs, strict=True)]),
        np.concatenate([(n if b is None else b)[r]
                        for (r, _, _), (_, _, _, n, b) in zip(parts, specs, strict=True)]),
        tick_rate=RATE, pos_scale=scale)
    for k, (cell, prev, members, now, base) in enumerate(specs):
        one = encode_chunk(cell, prev, members, now, base, elapsed_ticks=3 if base is not None
                           else 0, tick_rate=RATE, pos_scale=scale)
        assert batch.chunks[k] == one


def test_malformed_chunks_are_refused_with_a_reason():
    now = np.ones((10, 8), dtype="<u2")
    members = np.array([2, 5])
    good = encode_chunk(0, members[:0], members, now, None, elapsed_ticks=0, tick_rate=RATE)
    got = decode_chunk(good, tick=4, tick_rate=RATE, kept={})
    assert got.slots.tolist() == [2, 5] and got.members.tolist() == [2, 5]
    with pytest.raises(CodecError, match="trailing"):
        decode_chunk(good + b"\0", tick=4, tick_rate=RATE, kept={})
    with pytest.raises(CodecError, match="flag"):
        decode_chunk(b"\x80" + good[1:], tick=4, tick_rate=RATE, kept={})
    backwards = bytearray(good)
    backwards[11:15] = bytes([5, 0, 2, 0])  # the added slots (after the count), descending
    with pytest.raises(CodecError, match="ascending"):
        decode_chunk(bytes(backwards), tick=4, tick_rate=RATE, kept={})
    delta = encode_chunk(0, members, members, now, now, elapsed_ticks=2, tick_rate=RATE)
    with pytest.raises(CodecError, match="not kept"):
        decode_chunk(delta, tick=4, tick_rate=RATE, kept={})
    with pytest.raises(CodecError, match="was not in snapshot"):
        decode_chunk(delta, tick=4, tick_rate=RATE, kept={2: _kept(members, now[members], {})})
    with pytest.raises(CodecError, match="had 1 members"):
        decode_chunk(delta, tick=4, tick_rate=RATE,
                     kept={2: _kept(members, now[members], {0: [2]})})
    with pytest.raises(CodecError, match="both left and gone"):
        decode_personal(encode_personal(reset=False, left=members, gone=members[:1],
                                        spawn_slots=members[:0], spawn_words=now[:0]))
    with pytest.raises(CodecError, match="empty"):
        decode_personal(b"")
