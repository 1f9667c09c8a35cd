"""The whole-room (vectorised) interest path against its one-client references, and the
laws of chunked snapshots with many clients at once.

- ``RoomCells`` (every client's cells, hysteresis and budget schedule in one pass) agrees
  exactly with one ``ClientCells`` + ``Allowance`` per client: same cells, same cells
  sent in the same offer order, same priorities, same spending, across moves, teleports,
  joins, leaves and seat rows reused.
- ``encode_personals`` gives each client the bytes of ``encode_personal``; framed chunks
  are the protobuf bytes of ``ServerFrame{snapshot{chunks: [chunk]}}``.
- An ``InterestRoom`` with several clients that join, leave (rows reused), reset, skip
  snapshots and ack at different ticks in the same tick, and get hit: every client's
  ``ChunkMirror`` view is the world restricted to its interest set (with a budget: a
  subset, each record the world's at its own tick), and equals the server's model of it.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proto import codec
from proto import tickwire_pb2 as pb
from proto.chunks import ChunkMirror, encode_chunk, encode_chunks, encode_personal, encode_personals
from server.interestroom import InterestRoom
from sim.interest import Allowance, ClientCells, Grid, RoomCells
from tests.unit.test_interest_laws import assert_view_is_world, interest_params

RATE = 30


# -- RoomCells == ClientCells per client ------------------------------------------------------

def _reference_send(cells: ClientCells, allowance: Allowance | None, tick: int,
                    est_of: dict[int, int]) -> tuple[list[int], list[bool]]:
    """One client's offer order (cell ids) and sent flags, the way the one-client code
    decides them: musts whatever the cost, then cells while tokens remain before each."""
    order, n_must = cells.plan(tick)
    ids = cells.cells[order]
    est = np.array([est_of[int(c)] for c in ids], dtype=np.int64)
    if allowance is None:
        take = len(order)
    else:
        spent = np.cumsum(est)
        ok = spent - est < allowance.tokens
        ok[:n_must] = True
        stop = np.flatnonzero(~ok)
        take = int(stop[0]) if len(stop) else len(order)
        allowance.spend(int(spent[take - 1]) if take else 0)
    cells.sent(tick, order[:take])
    return ids.tolist(), [k < take for k in range(len(order))]


@given(seed=st.integers(0, 2**32 - 1), budget=st.sampled_from([None, 60.0, 400.0]),
       near=st.sampled_from([0.0, 120.0]), cell=st.sampled_from([100.0, 150.0, 250.0]),
       margin=st.sampled_from([0.0, 60.0]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_room_cells_schedule_every_client_exactly_like_one_client_cells_each(
        seed, budget, near, cell, margin):
    rng = np.random.default_rng(seed)
    width = 3000.0
    grid = Grid.for_world(width, width * 0.7, cell)
    radius = 300.0
    room = RoomCells(grid, radius, margin, RATE, near, rows=2)  # grows as rows come
    refs: dict[int, tuple[ClientCells, Allowance | None]] = {}
    centres: dict[int, np.ndarray] = {}
    for tick in range(1, 60):
        for row in range(6):  # seats come and go; a row is reused by a new client
            if row not in refs and rng.random() < 0.3:
                room.grow(row + 1)
                room.clear(row)
                refs[row] = (ClientCells(grid, radius, margin, RATE, near),
                             None if budget is None else Allowance(budget))
                centres[row] = rng.uniform([-200, -200], [width + 200, width * 0.7 + 200])
            elif row in refs and rng.random() < 0.03:
                del refs[row]
                room.clear(row)
        rows = np.array([r for r in refs if rng.random() < 0.9], dtype=np.int64)
        rng.shuffle(rows)
        if not len(rows):
            continue
        for r in rows.tolist():
            centres[r] = centres[r] + rng.normal(0, 40, 2)
            if rng.random() < 0.05:
                centres[r] = rng.uniform(0, width, 2)  # a teleport: a new block of cells
        est_of = {int(c): int(rng.integers(0, 90)) for c in range(grid.cells)}
        est_of.update({int(c): 0 for c in rng.choice(grid.cells, grid.cells // 4)})
        keys, keep, dist = room.update(rows, np.array([centres[r] for r in rows.tolist()]))
        ids = keys - (rows * room.stride)[:, None]
        est = np.array([[est_of.get(int(c), 0) for c in line] for line in ids])
        tokens = None
        if budget is not None:
            for r in rows.tolist():
                refs[r][1].earn()
            tokens = np.array([refs[r][1].tokens for r in rows.tolist()])
        plan, cost = room.schedule(tick, rows, keys, keep, dist, est, tokens, est > 0)
        for i, r in enumerate(rows.tolist()):
            cells, allowance = refs[r]
            before = None if allowance is None else allowance.tokens
            cells.update((float(centres[r][0]), float(centres[r][1])))
            want_order, want_sent = _reference_send(cells, allowance, tick, est_of)
            mine = plan.client == i
            # The cells sent, in the order offered (musts, then by priority).
            want = [c for c, sent in zip(want_order, want_sent, strict=True) if sent]
            assert plan.cell[mine].tolist() == want, (tick, r)
            if allowance is not None:
                assert before - cost[i] == allowance.tokens
            got_cells, got_last, got_priority = room.cells_of(r)
            assert np.array_equal(got_cells, cells.cells)
            assert np.array_equal(got_last, cells.last_sent)
            assert np.array_equal(got_priority, cells.priority)
            inside = room.in_interest[r * room.stride : (r + 1) * room.stride]
            assert np.array_equal(np.flatnonzero(inside), cells.cells)


# -- batch encoders == one-at-a-time encoders ------------------------------------------------

@given(seed=st.integers(0, 2**32 - 1), clients=st.integers(0, 9))
@settings(max_examples=100, deadline=None)
def test_personal_parts_in_one_batch_are_the_bytes_of_one_at_a_time(seed, clients):
    rng = np.random.default_rng(seed)
    lists, want = ([], [], []), []
    words_parts = []
    reset = rng.random(clients) < 0.3
    for i in range(clients):
        slots = np.sort(rng.choice(3000, int(rng.integers(0, 40)), replace=False))
        which = rng.integers(0, 3, len(slots))
        left, gone, spawn = slots[which == 0], slots[which == 1], slots[which == 2]
        spawn_words = rng.integers(0, 65536, (len(spawn), 8)).astype("<u2")
        want.append(encode_personal(reset=bool(reset[i]), left=left, gone=gone,
                                    spawn_slots=spawn, spawn_words=spawn_words))
        for part, arr in zip(lists, (left, gone, spawn), strict=True):
            part.append((np.full(len(arr), i), arr))
        words_parts.append(spawn_words)

    def flat(part):
        return (np.concatenate([o for o, _ in part]).astype(np.int64) if part
                else np.zeros(0, np.int64),
                np.concatenate([s for _, s in part]).astype(np.int64) if part
                else np.zeros(0, np.int64))

    left, gone, spawn = (flat(p) for p in lists)
    words = np.concatenate(words_parts) if words_parts else np.zeros((0, 8), "<u2")
    assert encode_personals(reset, left, gone, spawn, words) == want
    # Owners interleaved at random, each owner's slots still ascending.
    r = rng.random(len(spawn[0]))
    perm = np.argsort(r[np.lexsort((r, spawn[0]))])
    assert encode_personals(reset, left, gone, (spawn[0][perm], spawn[1][perm]),
                            words[perm]) == want


@given(seed=st.integers(0, 2**32 - 1), chunks=st.integers(1, 8),
       big=st.booleans())
@settings(max_examples=60, deadline=None)
def test_framed_chunks_are_the_protobuf_bytes_of_a_snapshot_holding_them(seed, chunks, big):
    rng = np.random.default_rng(seed)
    capacity = 3000 if big else 300  # big cells: chunk lengths past 127 and 16383 bytes
    now = rng.integers(0, 65536, (capacity, 8)).astype("<u2")
    now[:, 6] = (now[:, 6] & 0xFF00) | 1
    cells, members = [], []
    for _ in range(chunks):
        cells.append(int(rng.integers(0, 5000)))
        members.append(np.sort(rng.choice(capacity, int(rng.integers(0, capacity)),
                                          replace=False)))
    rows = np.concatenate(members)
    n_add = np.array([len(m) for m in members])
    args = (np.array(cells), np.zeros(chunks, dtype=np.int64), np.zeros(chunks, np.int64),
            n_add, rows, np.ones(len(rows), bool), np.zeros(len(rows), bool), now[rows],
            now[rows])
    framed = encode_chunks(*args, tick_rate=RATE, framed=True)
    for k, (cell, m) in enumerate(zip(cells, members, strict=True)):
        chunk = encode_chunk(cell, m[:0], m, now, None, elapsed_ticks=0, tick_rate=RATE)
        want = pb.ServerFrame(snapshot=pb.Snapshot(chunks=[chunk])).SerializeToString()
        assert framed.chunks[k] == want
        assert framed.sizes[k] == len(want)


# -- many clients at once: the view laws -----------------------------------------------------

CAPACITY = 64
PLAYERS = 6


def _snapshot(part) -> pb.Snapshot:
    data = b"".join(part.chunks)
    data += pb.ServerFrame(snapshot=pb.Snapshot(personal=part.personal)).SerializeToString()
    frame = pb.ServerFrame()
    frame.ParseFromString(data)
    return frame.snapshot


@given(seed=st.integers(0, 2**32 - 1), budget=st.sampled_from([0.0, 0.5, 2.0]),
       width=st.sampled_from([1500.0, 4000.0]), ticks=st.integers(20, 70))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A skipped snapshot carried a reused slot's new entity while the client held the old one
# (the removal it cancelled never reached the client): found by this law, kept as a case.
@example(seed=68, budget=0.5, width=1500.0, ticks=32)
def test_every_client_of_a_busy_room_sees_the_world_restricted_to_its_interest(
        seed, budget, width, ticks):
    rng = np.random.default_rng(seed)
    scale = codec.pos_scale_for(width, width)
    history = codec.SnapshotHistory(size=64, tick_rate=RATE, pos_scale=scale)
    room = InterestRoom(interest_params(budget, width, max_players=8), CAPACITY, history)
    pos = rng.uniform(0, width, (CAPACITY, 2)).astype(np.float32)
    vel = rng.uniform(-150, 150, (CAPACITY, 2)).astype(np.float32)
    alive = rng.random(CAPACITY) < 0.8
    alive[:PLAYERS] = True
    kind = np.where(alive, 2, 0).astype(np.uint8)
    kind[:PLAYERS] = 1
    gen = np.ones(CAPACITY, dtype=np.uint8)
    mirrors: dict[int, ChunkMirror] = {}
    acks: dict[int, int] = {}
    lost: dict[int, bool] = {}
    hit_at: dict[tuple[int, int], int] = {}
    states: dict[int, np.ndarray] = {}
    lags = {row: int(rng.integers(0, 4)) for row in range(PLAYERS)}  # acks at different ticks
    pending: dict[int, list[int]] = {}
    for tick in range(1, ticks + 1):
        for row in range(PLAYERS):
            if row not in mirrors and rng.random() < 0.25:
                room.join(row)  # a new client, perhaps in a row another one left
                mirrors[row] = ChunkMirror(RATE, scale, keep=64)
                acks[row], lost[row], pending[row] = 0, False, []
                hit_at = {k: v for k, v in hit_at.items() if k[0] != row}
            elif row in mirrors and rng.random() < 0.02:
                room.leave(row)
                del mirrors[row]
            elif row in mirrors and rng.random() < 0.02:
                room.reset(row)  # a resume: the next snapshot resets
                mirrors[row].clear()
                mirrors[row].waiting_reset = True
                acks[row], lost[row], pending[row] = 0, False, []
        pos += vel / RATE
        jump = rng.random(CAPACITY) < 0.03
        pos[jump] = rng.uniform(0, width, (int(jump.sum()), 2))
        np.clip(pos, 0, width - 0.01, out=pos)
        die = (rng.random(CAPACITY) < 0.03) & alive
        die[:PLAYERS] = False
        alive[die], kind[die] = False, 0
        born = (rng.random(CAPACITY) < 0.03) & ~alive & ~die
        alive[born] = True
        kind[born] = 3
        gen[born] += 1
        rows = [r for r in mirrors if rng.random() < 0.9]  # some seats not connected now
        shooters = rng.choice(CAPACITY, 3)
        targets = rng.choice(PLAYERS, 3)
        hit = (rng.random(3) < 0.2) & np.isin(targets, rows)
        hits = (shooters[hit].astype(np.int64), targets[hit].astype(np.int64))
        for s, t in zip(*hits, strict=True):
            hit_at[(int(t), int(s))] = tick
        for key in [k for k in hit_at if not alive[k[1]]]:
            del hit_at[key]  # a hitter that died is forgotten, even if its slot is reused
        state = codec.quantize(pos=pos, vel=vel, hp=np.full(CAPACITY, 50),
                               score=np.zeros(CAPACITY), kind=kind, gen=gen,
                               aim=np.zeros(CAPACITY), flags=np.zeros(CAPACITY, np.uint8),
                               alive=alive, pos_scale=scale)
        states[tick] = state
        history.push(tick, state)
        parts = room.deliveries(tick, state, pos, alive, rows, rows,
                                [acks[r] for r in rows], hits)
        assert room.oldest_age_s <= 1.0 + 1e-9
        words = state.view("<u2").reshape(-1, 8)
        grid = room.grid
        cx, cy = grid.cell_xy(pos)
        cell_of = cy * grid.columns + cx
        model = room.clients
        for row, part in zip(rows, parts, strict=True):
            mirror = mirrors[row]
            if rng.random() < 0.05:
                room.skipped(row, tick)
                lost[row] = True
                continue
            snap = _snapshot(part)
            applied = mirror.apply(tick, list(snap.chunks), snap.personal)
            if rng.random() < 0.02:  # the client lost its state: ack 0
                mirror.clear()
                mirror.waiting_reset = True
                mirror.ack_tick = 0
                acks[row], pending[row] = 0, []
                continue
            if mirror.ack_tick:
                pending[row].append(mirror.ack_tick)
                due = [t for t in pending[row] if t <= tick - lags[row]]
                if due and rng.random() < 0.8:
                    acks[row] = max(acks[row], max(due))
                    pending[row] = [t for t in pending[row] if t > acks[row]]
            if not applied:
                continue
            slots, view_words, as_of = assert_view_is_world(mirror, states)
            interest = np.isin(cell_of, model[row].cells.cells) & alive
            interest[row] = True
            for (t, s), when in hit_at.items():
                if t == row and when > tick - RATE and alive[s]:
                    interest[s] = True
            expected = np.flatnonzero(interest)
            assert np.isin(slots, expected).all()
            assert (view_words[:, 6] == words[slots, 6]).all()
            assert np.isin(slots, model[row].view_slots).all()
            if not lost[row]:
                assert np.array_equal(model[row].view_slots, slots)
            if budget == 0:
                assert np.array_equal(slots, expected)
                assert (as_of == tick).all()


@given(seed=st.integers(0, 2**32 - 1), seats=st.integers(0, 12))
@settings(max_examples=100, deadline=None)
def test_personal_frames_are_the_protobuf_bytes_of_each_seats_snapshot(seed, seats):
    from server.interestroom import personal_frames
    rng = np.random.default_rng(seed)
    seqs = np.where(rng.random(seats) < 0.3, 0, rng.integers(0, 2**32, seats))
    rtts = np.where(rng.random(seats) < 0.3, 0.0,
                    rng.uniform(0, 5000, seats)).astype(np.float32)
    # Personal parts from a few bytes to past the one- and two-byte varint lengths.
    personals = [rng.integers(0, 256, int(rng.choice([7, 100, 200, 20000]))).astype(
        np.uint8).tobytes() for _ in range(seats)]
    want = [pb.ServerFrame(snapshot=pb.Snapshot(last_input_seq=int(s), rtt_ms=float(r),
                                                personal=p)).SerializeToString()
            for s, r, p in zip(seqs, rtts, personals, strict=True)]
    assert personal_frames(seqs.astype(np.int64), rtts, personals) == want
