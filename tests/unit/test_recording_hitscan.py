"""Recordings carry hitscan shots: the views and the room's rewind limits go in, the
resolved shots (shooter, target) are compared on replay, and each rotated file restores
the hit-test history, so a replay shows the same hits. Plain-float time; nothing sleeps."""

from __future__ import annotations

import math

import numpy as np

from proto import tickwire_pb2 as pb
from server.recording import (
    SHOT_ROW,
    SHOTS,
    VIEW_ROW,
    VIEWS,
    Record,
    RecordingConfig,
    RoomRecorder,
    read_records,
    unpack_shots,
    unpack_views,
    write_records,
)
from server.replay import replay_file
from server.room import Room
from sim.params import load_params


def _room(tmp_path, **config) -> tuple[Room, RoomRecorder]:
    params = load_params().with_changes({
        "npc.count": 30, "world.width": 400.0, "world.height": 400.0,
        "weapon.kind": "hitscan", "weapon.cooldown_s": 0.1, "weapon.range": 500.0})
    room = Room("hs", params, now=0.0)
    recorder = RoomRecorder(room, RecordingConfig(tmp_path, **config))
    room.recorder = recorder
    for pid in range(1, 7):
        room.join(pid, f"p{pid}", 0.0)
        room.set_rtt(pid, 40.0 * pid)  # different limits per seat
    return room, recorder


def _play(room: Room, ticks: int) -> None:
    """Players circle and fire at the nearest NPC as they would have drawn it ~5 ticks ago."""
    w = room.world
    for n in range(ticks):
        now = room.tick_number
        for i, seat in enumerate(room.seats.values()):
            me = w.pos[seat.entity]
            npcs = w.pos[: room.params.npc_count]
            d = ((npcs - me) ** 2).sum(axis=1)
            tx, ty = npcs[int(d.argmin())]
            angle = n / 9 + i
            room.submit(seat.player_id, pb.Input(cmds=[pb.InputCmd(
                seq=seat.last_queued_seq + 1, move_x=math.cos(angle), move_y=math.sin(angle),
                aim=math.atan2(float(ty - me[1]), float(tx - me[0])), buttons=1,
                view_tick=max(1, now - 5), view_next_tick=max(1, now - 4),
                view_blend=(n % 10) / 10)]))
        room.tick((room.tick_number + 1) / 30)


def test_a_replay_shows_the_same_hitscan_hits_in_every_rotated_file(tmp_path):
    # A checkpoint (world + history) packs to ~9 KB here: files of a few dozen ticks.
    # (How many files depends on when the writer thread counts bytes: assert no number.)
    room, recorder = _room(tmp_path, hash_every=10, keep=10, max_bytes=12000)
    _play(room, 200)
    recorder.close()
    assert room.shot_stats.hits > 20
    checked = 0
    for path in recorder.files:
        result = replay_file(path)
        assert result.ok, result.summary()
        if result.steps < 20:  # the newest file may hold little more than its checkpoint
            continue
        assert {VIEWS, SHOTS} <= {r.kind for r in read_records(path)}
        assert result.shots_checked > 0 and result.hits_checked > 0
        assert "hitscan shots" in result.summary()
        checked += result.start_tick > 0  # starts from a rotated checkpoint (history restored)
    assert checked >= 2


def test_a_recorded_hit_the_replay_does_not_reproduce_is_caught(tmp_path):
    room, recorder = _room(tmp_path, hash_every=1000)  # no hash would catch it before
    _play(room, 60)
    recorder.close()
    (path,) = recorder.files
    records = list(read_records(path))
    for i, rec in enumerate(records):
        if rec.kind == SHOTS:
            tick, rows = unpack_shots(rec.payload)
            changed = rows.copy()
            changed["target"][0] = -1 if rows["target"][0] >= 0 else 0
            records[i] = Record(SHOTS, rec.payload[:8] + changed.astype(SHOT_ROW).tobytes())
            break
    bad = tmp_path / "bad.twrec"
    write_records(bad, records)
    result = replay_file(bad)
    assert not result.ok and result.diverged_tick == tick
    assert "hitscan shots" in result.detail


def test_the_room_limit_is_recorded_not_recomputed(tmp_path):
    room, recorder = _room(tmp_path, hash_every=1000)
    _play(room, 60)
    recorder.close()
    (path,) = recorder.files
    records = list(read_records(path))
    # Shrink every recorded limit to 0: the replayed shots rewind nowhere and differ.
    for i, rec in enumerate(records):
        if rec.kind == VIEWS:
            _tick, rows = unpack_views(rec.payload)
            rows = rows.copy()
            rows["limit"] = 0.0
            records[i] = Record(VIEWS, rec.payload[:8] + rows.astype(VIEW_ROW).tobytes())
    bad = tmp_path / "nolimit.twrec"
    write_records(bad, records)
    assert not replay_file(bad).ok
    assert np.dtype(VIEW_ROW).itemsize == 20
