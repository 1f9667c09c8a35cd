"""Recording a Room and replaying it: equal hashes for an honest file, the first diverging
tick named for a tampered one, rotation bounded with every file replayable on its own.
Rooms run on plain-float time; nothing sleeps."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from proto import tickwire_pb2 as pb
from server.recording import (
    INPUT_ROW,
    INPUTS,
    Record,
    RecordingConfig,
    RecordingError,
    RoomRecorder,
    read_records,
    unpack_inputs,
    write_records,
)
from server.replay import replay_file, run_replay
from server.room import Room
from sim.params import load_params


def play(room: Room, ticks: int, start: int = 0) -> None:
    """Every seated player moves in a circle, aims along it and fires now and then."""
    for n in range(start, start + ticks):
        for i, seat in enumerate(list(room.seats.values())):
            angle = n / 9 + i
            room.submit(seat.player_id, pb.Input(ack_tick=0, cmds=[pb.InputCmd(
                seq=seat.last_queued_seq + 1, move_x=math.cos(angle), move_y=math.sin(angle),
                aim=angle % math.pi, buttons=1 if (n + i) % 7 == 0 else 0)]))
        room.tick((room.tick_number + 1) / 30)


def recorded_room(tmp_path, *, hash_every: int = 30, max_bytes: int = 1 << 24, keep: int = 4
                  ) -> tuple[Room, RoomRecorder]:
    room = Room("r1", load_params().with_changes({"npc.count": 20}), now=0.0)
    recorder = RoomRecorder(room, RecordingConfig(tmp_path, max_bytes=max_bytes, keep=keep,
                                                  hash_every=hash_every))
    room.recorder = recorder
    return room, recorder


def test_a_recorded_session_with_joins_leaves_and_a_param_change_replays_exactly(tmp_path):
    room, recorder = recorded_room(tmp_path)
    room.join(1, "a", 0.0)
    room.join(2, "b", 0.0)
    play(room, 40)
    room.set_params(room.params.with_changes({"player.max_speed": 300.0,
                                              "projectile.damage": 50}), 1.4)
    play(room, 30, 40)
    room.join(3, "c", 2.4)
    room.leave(1)
    play(room, 50, 70)
    recorder.close()

    (path,) = recorder.files
    result = replay_file(path)
    assert result.ok, result.summary()
    assert result.steps == 120 and result.hashes_checked == 4
    assert result.end_tick == room.tick_number == 120


def test_tampering_with_one_input_is_caught_and_the_tick_named(tmp_path):
    room, recorder = recorded_room(tmp_path, hash_every=1)
    room.join(1, "a", 0.0)
    room.join(2, "b", 0.0)
    play(room, 60)
    recorder.close()
    records = list(read_records(recorder.files[0]))

    # Move player 1 the other way on the input that simulates tick 25 -> 26.
    for i, rec in enumerate(records):
        if rec.kind == INPUTS:
            tick, rows = unpack_inputs(rec.payload)
            if tick == 25:
                rows = rows.copy()
                rows["move_x"][0] = -rows["move_x"][0]
                records[i] = Record(INPUTS, rec.payload[:8] + rows.astype(INPUT_ROW).tobytes())
    tampered = tmp_path / "tampered.twrec"
    write_records(tampered, records)

    result = replay_file(tampered)
    assert not result.ok
    assert result.diverged_tick == 26 and result.last_good_tick == 25
    assert "26" in result.summary()
    out = io.StringIO()
    assert run_replay([tampered], out=out) == 1
    assert "DIVERGED at tick 26" in out.getvalue()
    assert run_replay([recorder.files[0]], out=io.StringIO()) == 0


def test_rotation_keeps_k_files_each_replayable_from_its_own_checkpoint(tmp_path):
    room, recorder = recorded_room(tmp_path, hash_every=10, keep=2)
    for pid in range(1, 9):
        room.join(pid, f"p{pid}", 0.0)
    checkpoint_bytes = recorder.bytes_written
    # Room for about 50 ticks of 8 players after each file's checkpoint.
    recorder.config = RecordingConfig(tmp_path, max_bytes=checkpoint_bytes + 50 * 8 * 17,
                                      keep=2, hash_every=10)
    play(room, 301)
    recorder.close()

    files = sorted(tmp_path.glob("*.twrec"))
    assert [p.name for p in files] == [p.name for p in recorder.files]
    assert len(files) == 2 and recorder._index > 2  # older files were deleted
    for path in files:
        result = replay_file(path)
        assert result.ok, result.summary()
        assert result.start_tick > 0 and result.steps > 0


def test_a_recording_cut_short_replays_up_to_the_cut(tmp_path):
    room, recorder = recorded_room(tmp_path)
    room.join(1, "a", 0.0)
    play(room, 95)
    recorder.close()
    data = recorder.files[0].read_bytes()
    cut = tmp_path / "cut.twrec"
    cut.write_bytes(data[:-10])
    result = replay_file(cut)
    assert result.ok and result.truncated is not None
    # The last block (ticks 90..95, written at close) is lost; the rest replays.
    assert result.hashes_checked == 3 and result.steps == 90


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    bogus = tmp_path / "x.twrec"
    bogus.write_bytes(b"hello world")
    with pytest.raises(RecordingError, match="not a Tickwire recording"):
        replay_file(bogus)


def test_recording_is_compact(tmp_path):
    room, recorder = recorded_room(tmp_path)
    for pid in range(1, 5):
        room.join(pid, f"p{pid}", 0.0)
    before = recorder.bytes_written
    play(room, 300)
    recorder.close()
    per_tick = (recorder.bytes_written - before) / 300
    assert per_tick < 4 * INPUT_ROW.itemsize + 40, per_tick  # 4 players' rows + overhead
    assert np.dtype(INPUT_ROW).itemsize == 17


def test_the_replay_command_exits_0_for_a_good_file_and_1_for_a_diverged_one(tmp_path, capsys):
    from server.cli import main

    room, recorder = recorded_room(tmp_path, hash_every=5)
    room.join(1, "a", 0.0)
    play(room, 20)
    recorder.close()
    assert main(["replay", str(recorder.files[0])]) == 0
    assert "all match" in capsys.readouterr().out
    records = list(read_records(recorder.files[0]))
    records = [r for r in records if not (r.kind == INPUTS and unpack_inputs(r.payload)[0] == 7)]
    bad = tmp_path / "bad.twrec"
    write_records(bad, records)
    assert main(["replay", str(bad)]) == 1
    assert "DIVERGED" in capsys.readouterr().out


def test_a_closed_recorder_ignores_the_room_even_when_a_rotation_is_due(tmp_path):
    # A disposed room may still tick once after its recorder was closed without waiting.
    room, recorder = recorded_room(tmp_path, hash_every=1, max_bytes=64)
    room.join(1, "a", 0.0)
    play(room, 5)
    recorder.close(wait=False)
    play(room, 5, 5)  # must not raise (the writer is shut down)
    recorder.close()
    assert all(replay_file(path).ok for path in recorder.files)


def test_a_write_failure_stops_the_recording_once_and_the_room_plays_on(tmp_path, caplog):
    directory = tmp_path / "rec"
    room = Room("r1", load_params().with_changes({"npc.count": 5}), now=0.0)
    failures = []
    recorder = RoomRecorder(room, RecordingConfig(directory, max_bytes=1, keep=2,
                                                  hash_every=5),
                            on_failure=failures.append)
    room.recorder = recorder
    room.join(1, "a", 0.0)
    play(room, 6)  # a hash at tick 5: the first file is past max_bytes and rotates
    recorder._io.submit(lambda: None).result(timeout=5)  # the writer is idle
    # The directory goes away: the next file cannot be opened.
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    directory.write_text("now a regular file")
    play(room, 20, 6)
    recorder.close()
    assert recorder.failed
    assert len(failures) == 1 and "cannot open" in failures[0]
    assert room.tick_number == 26  # the room played on
    lines = [r for r in caplog.records if r.getMessage().startswith("recording stopped")]
    assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback


def test_prune_keeps_the_newest_files_and_never_a_live_one(tmp_path):
    import os

    from server.recording import prune_recordings

    paths = []
    for i in range(6):
        path = tmp_path / f"r{i}-00001.twrec"
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
        paths.append(path)
    (tmp_path / "notes.txt").write_text("not a recording")
    live = {paths[0]}  # the oldest is still being written
    deleted = prune_recordings(tmp_path, retain=3, live=live)
    assert sorted(deleted) == [paths[1], paths[2], paths[3]]
    assert sorted(tmp_path.iterdir()) == sorted([paths[0], paths[4], paths[5],
                                                 tmp_path / "notes.txt"])
    assert prune_recordings(tmp_path, retain=0, live=set()) == []  # 0 keeps everything
