"""Watching a game without playing it: frames of a world for spectators, from a recording
(``tickwire replay FILE --serve``) or from a live room.

Theory of operation
-------------------
A spectator takes no seat and sends no input, so it needs none of the player protocol:
it reads *frames*, one per tick, each the live entities of the world as plain numbers
(``world_frame``). The browser page (``client_demo/web/replay.html``) draws them with the
demo client's renderer and keeps play, pause, speed, seek and follow to itself.

``ReplayTimeline`` is the recording side, sans-I/O. Loading a file replays it once (the
records are applied exactly as ``tickwire replay`` does, hashes checked) and keeps a copy
of the world every ``checkpoint_every`` ticks. ``frames(tick, count)`` then restores the
nearest copy at or before ``tick`` and steps forward, so a seek anywhere costs at most
``checkpoint_every`` steps, and playing on continues from where the last call stopped.

``LiveFrames`` is the live side: it turns a room's world into a frame at most once per
tick, shared by every spectator of that room, so spectators cost the tick nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.recording import (
    CHECKPOINT,
    INPUTS,
    JOIN,
    LEAVE,
    Record,
    RecordingError,
    parse_checkpoint,
    read_records,
    restore_world,
    unpack_member,
)
from server.replay import ReplayResult, apply_record
from sim.step import Inputs, StepEvents
from sim.world import KIND_PLAYER, World

__all__ = ["MAX_FRAMES", "LiveFrames", "ReplayTimeline", "world_frame", "world_info"]

MAX_FRAMES = 600  # frames per request at most (20 s at 30 Hz)
CHECKPOINT_EVERY = 150  # ticks between kept world copies (5 s at 30 Hz)


def world_frame(world: World) -> dict[str, Any]:
    """The world at its current tick, for drawing: ``tick`` and ``e``, one row per live
    entity ``[slot, kind, x, y, vx, vy, hp, flags, aim, owner, score]`` (positions to
    1/100 unit, aim to 1/1000 rad; owner is the player id for players)."""
    slots = np.flatnonzero(world.alive)
    pos = np.round(world.pos[slots].astype(np.float64), 2)
    vel = np.round(world.vel[slots].astype(np.float64), 2)
    aim = np.round(world.aim[slots].astype(np.float64), 3)
    columns = (slots, world.kind[slots], pos[:, 0], pos[:, 1], vel[:, 0], vel[:, 1],
               world.hp[slots], world.flags[slots], aim, world.owner[slots],
               world.score[slots])
    rows = list(zip(*(c.tolist() for c in columns), strict=True))
    return {"tick": world.tick, "e": rows}


def world_info(world: World) -> dict[str, Any]:
    """What a page needs besides frames: sizes, radii, hit points, tick rate."""
    p = world.params
    return {"tick_rate": p.tick_rate, "width": p.world_width, "height": p.world_height,
            "player_radius": p.player_radius, "npc_radius": p.npc_radius,
            "player_hp": p.player_hp, "npc_hp": p.npc_hp}


@dataclass(slots=True)
class _Cursor:
    world: World
    at: int  # index of the next record to apply
    # the events of the newest replayed step (hitscan shots are checked against them)
    last: list[StepEvents | None] = field(default_factory=lambda: [None])


@dataclass(slots=True)
class ReplayTimeline:
    """A recording file as seekable frames (see module docs)."""

    path: Path
    records: list[Record]
    start_tick: int
    end_tick: int
    info: dict[str, Any]
    players: list[dict[str, int | None]]  # player_id, slot, joined, left (ticks)
    truncated: str | None = None
    diverged: str | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    _checkpoints: list[_Cursor] = field(default_factory=list)
    _cursor: _Cursor | None = None
    _inputs: Inputs | None = None

    @classmethod
    def load(cls, path: str | Path, checkpoint_every: int = CHECKPOINT_EVERY
             ) -> ReplayTimeline:
        """Read and replay ``path`` once. Raises ``RecordingError`` for a file that is not a
        recording or does not start with a checkpoint. A file cut short plays up to the
        cut; a state hash that disagrees ends the timeline before it (``diverged``)."""
        path = Path(path)
        cut: list[str] = []
        records = list(read_records(path, on_truncated=cut.append))
        if not records or records[0].kind != CHECKPOINT:
            raise RecordingError(f"{path}: does not start with a checkpoint")
        world = restore_world(parse_checkpoint(records[0].payload))
        timeline = cls(path, records, world.tick, world.tick, world_info(world), [],
                       truncated=cut[0] if cut else None, checkpoint_every=checkpoint_every)
        timeline._inputs = Inputs.empty(world.capacity)
        timeline._scan(world)
        return timeline

    def _scan(self, world: World) -> None:
        """The one full pass: checkpoints, tick range, who played when."""
        joined: dict[int, dict[str, int | None]] = {}
        # Players already seated in the checkpoint have no JOIN record.
        for slot in np.flatnonzero(world.alive & (world.kind == KIND_PLAYER)).tolist():
            pid = int(world.owner[slot])
            joined[pid] = {"player_id": pid, "slot": slot, "joined": world.tick, "left": None}
        self._checkpoints.append(_Cursor(world.copy(), 1))
        cursor = _Cursor(world, 1)
        while cursor.at < len(self.records):
            record = self.records[cursor.at]
            if record.kind in (JOIN, LEAVE):
                _tick, pid, slot = unpack_member(record.payload)
                if record.kind == JOIN:
                    joined[pid] = {"player_id": pid, "slot": slot, "joined": world.tick + 1,
                                   "left": None}
                elif pid in joined:
                    joined[pid]["left"] = world.tick
            mismatch = self._apply_next(cursor)
            if mismatch:
                self.diverged = f"tick {world.tick}: {mismatch}"
                self.records = self.records[:cursor.at - 1]
                break
            if record.kind == INPUTS and world.tick % self.checkpoint_every == 0:
                self._checkpoints.append(_Cursor(world.copy(), cursor.at, list(cursor.last)))
        self.end_tick = world.tick
        self.players = sorted(joined.values(), key=lambda p: int(p["player_id"] or 0))

    def _apply_next(self, cursor: _Cursor) -> str | None:
        record = self.records[cursor.at]
        cursor.at += 1
        assert self._inputs is not None
        return apply_record(cursor.world, self._inputs, record.kind, record.payload,
                            ReplayResult(self.path), cursor.last)

    def _advance_to(self, cursor: _Cursor, tick: int) -> None:
        """Apply records until the world is at ``tick`` and the next record belongs to a
        later tick (joins and parameter changes of ``tick + 1`` stay unapplied)."""
        while cursor.world.tick < tick and cursor.at < len(self.records):
            self._apply_next(cursor)

    def frames(self, tick: int, count: int) -> list[dict[str, Any]]:
        """Frames for ticks ``tick .. tick + count - 1`` that exist (clamped to the
        recording; at most ``MAX_FRAMES``)."""
        tick = max(self.start_tick, min(tick, self.end_tick))
        count = max(0, min(count, MAX_FRAMES, self.end_tick - tick + 1))
        cursor = self._cursor
        if cursor is None or not (cursor.world.tick <= tick):
            # Seek: the nearest kept copy at or before `tick` (copied: they stay pristine).
            best = max((c for c in self._checkpoints if c.world.tick <= tick),
                       key=lambda c: c.world.tick)
            cursor = _Cursor(best.world.copy(), best.at, list(best.last))
        self._advance_to(cursor, tick)
        out = []
        for _ in range(count):
            out.append(world_frame(cursor.world))
            if cursor.world.tick >= self.end_tick:
                break
            self._advance_to(cursor, cursor.world.tick + 1)
        self._cursor = cursor
        return out

    def describe(self) -> dict[str, Any]:
        return {"file": str(self.path), "start_tick": self.start_tick,
                "end_tick": self.end_tick, "players": self.players,
                "truncated": self.truncated, "diverged": self.diverged, **self.info}


class LiveFrames:
    """The current frame of a live world, built at most once per tick however many
    spectators ask."""

    def __init__(self) -> None:
        self._tick: int | None = None
        self._frame: dict[str, Any] | None = None

    def frame(self, world: World) -> dict[str, Any]:
        if self._frame is None or self._tick != world.tick:
            self._frame = world_frame(world)
            self._tick = world.tick
        return self._frame
