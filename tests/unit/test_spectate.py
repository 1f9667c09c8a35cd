"""server.spectate: a recording as seekable frames that are the states the room had, and a
live room's frame built once per tick. Rooms run on plain-float time; nothing sleeps."""

from __future__ import annotations

import pytest

from server.recording import RecordingError
from server.spectate import MAX_FRAMES, LiveFrames, ReplayTimeline, world_frame
from tests.unit.test_recording import play, recorded_room


@pytest.fixture
def recording(tmp_path):
    """A 180-tick recording with a join, a leave and a parameter change; the room's frame
    at ticks 60 and 180, taken while it ran."""
    room, recorder = recorded_room(tmp_path)
    room.join(1, "a", 0.0)
    room.join(2, "b", 0.0)
    play(room, 60)
    seen = {60: world_frame(room.world)}
    room.set_params(room.params.with_changes({"player.max_speed": 300.0}), 2.04)
    room.join(3, "c", 2.1)
    play(room, 60, 60)
    room.leave(1)
    play(room, 60, 120)
    seen[180] = world_frame(room.world)
    recorder.close()
    (path,) = recorder.files
    return path, seen


def test_frames_are_the_states_the_room_had(recording):
    path, seen = recording
    tl = ReplayTimeline.load(path, checkpoint_every=50)
    assert (tl.start_tick, tl.end_tick, tl.diverged) == (0, 180, None)
    assert tl.frames(60, 1) == [seen[60]]
    assert tl.frames(180, 1) == [seen[180]]
    assert [p["player_id"] for p in tl.players] == [1, 2, 3]
    assert tl.players[0]["left"] == 120 and tl.players[2]["joined"] == 61


def test_seeking_anywhere_gives_the_frames_of_a_straight_play(recording):
    path, _ = recording
    straight = ReplayTimeline.load(path).frames(0, MAX_FRAMES)
    assert [f["tick"] for f in straight] == list(range(181))
    tl = ReplayTimeline.load(path, checkpoint_every=40)
    for tick in (150, 3, 119, 120, 80, 180, 0):  # backwards, forwards, on checkpoints
        assert tl.frames(tick, 7) == straight[tick:tick + 7], tick


def test_requests_are_clamped_to_the_recording(recording):
    path, _ = recording
    tl = ReplayTimeline.load(path)
    assert [f["tick"] for f in tl.frames(178, 10)] == [178, 179, 180]
    assert [f["tick"] for f in tl.frames(-50, 2)] == [0, 1]
    assert [f["tick"] for f in tl.frames(9999, 5)] == [180]
    assert len(tl.frames(0, 10_000)) == 181 < MAX_FRAMES


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    bad = tmp_path / "x.rec"
    bad.write_bytes(b"hello")
    with pytest.raises(RecordingError):
        ReplayTimeline.load(bad)


def test_live_frames_are_built_once_per_tick(tmp_path):
    room, recorder = recorded_room(tmp_path)
    recorder.close()
    room.recorder = None
    live = LiveFrames()
    first = live.frame(room.world)
    assert live.frame(room.world) is first
    play(room, 1)
    second = live.frame(room.world)
    assert second is not first and second["tick"] == first["tick"] + 1
