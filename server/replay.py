"""`tickwire replay FILE`: re-simulate a recording headless and check its state hashes.

Theory of operation
-------------------
A recording file (``server.recording``) starts with a checkpoint of the world; the replay
restores it and then applies the records in the order the room produced them: joins and
leaves change the slots, PARAMS records change the parameters, each INPUTS record is one
``step`` with exactly the inputs the room applied (the VIEWS record before it gives the
firing players' views and rewind limits), each SHOTS record (the hitscan shots the server
resolved in that step: shooter, target) is compared with the replayed step's shots, so a
replay shows the same hits, and each HASH record is compared with
``World.state_hash`` of the replayed world. Because the step is deterministic, every hash
matches unless the simulation (or the file) differs from what ran on the server. The
first mismatch stops the replay and is reported with its tick; hashes are written every
N ticks, so the first differing step lies after the last matching hash and at or before
the reported tick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from server.recording import (
    CHECKPOINT,
    HASH,
    INPUTS,
    JOIN,
    LEAVE,
    PARAMS,
    PRE_MOVE,
    SHOTS,
    VIEWS,
    RecordingError,
    parse_checkpoint,
    read_records,
    restore_world,
    unpack_hash,
    unpack_inputs,
    unpack_member,
    unpack_shots,
    unpack_views,
)
from sim.params import ParamsError, params_from_mapping
from sim.step import Inputs, StepEvents, pre_move, step
from sim.world import World, WorldFullError

__all__ = ["ReplayResult", "add_replay_parser", "replay_file"]


@dataclass(slots=True)
class ReplayResult:
    """What one file's replay found. Ticks are world ticks (``World.tick``)."""

    path: Path
    start_tick: int = 0
    end_tick: int = 0
    steps: int = 0
    hashes_checked: int = 0
    shots_checked: int = 0  # hitscan shots whose (shooter, target) matched the recording
    hits_checked: int = 0  # of which hits
    last_good_tick: int | None = None  # tick of the last matching hash (or the checkpoint)
    diverged_tick: int | None = None  # tick of the first mismatch, None if all matched
    detail: str = ""
    truncated: str | None = None

    @property
    def ok(self) -> bool:
        return self.diverged_tick is None

    def summary(self) -> str:
        head = (f"{self.path}: ticks {self.start_tick}..{self.end_tick}, {self.steps} steps, "
                f"{self.hashes_checked} hashes checked")
        if self.shots_checked:
            head += f", {self.shots_checked} hitscan shots ({self.hits_checked} hits) checked"
        if self.truncated:
            head += f" (file ends early: {self.truncated})"
        if self.ok:
            return head + ": all match"
        return (f"{head}: DIVERGED at tick {self.diverged_tick} (last match at tick "
                f"{self.last_good_tick}; first differing step in "
                f"({self.last_good_tick}, {self.diverged_tick}]): {self.detail}")


def replay_file(path: str | Path) -> ReplayResult:
    """Replay one recording file. Raises ``RecordingError`` for a file that is not a
    recording, is damaged, or does not start with a checkpoint."""
    result = ReplayResult(Path(path))

    def truncated(what: str) -> None:
        result.truncated = what

    world: World | None = None
    inputs: Inputs | None = None
    last: list[StepEvents | None] = [None]  # the events of the newest replayed step
    for record in read_records(path, on_truncated=truncated):
        if record.kind == CHECKPOINT:
            if world is not None:
                raise RecordingError(f"{path}: a second checkpoint inside one file")
            world = restore_world(parse_checkpoint(record.payload))
            inputs = Inputs.empty(world.capacity)
            result.start_tick = result.end_tick = world.tick
            result.last_good_tick = world.tick
            continue
        if world is None or inputs is None:
            raise RecordingError(f"{path}: does not start with a checkpoint")
        mismatch = _apply(world, inputs, record.kind, record.payload, result, last)
        result.end_tick = world.tick
        if mismatch:
            result.diverged_tick = world.tick
            result.detail = mismatch
            return result
    if world is None:
        raise RecordingError(f"{path}: no checkpoint")
    return result


def _apply(world: World, inputs: Inputs, kind: int, payload: bytes,
           result: ReplayResult, last: list[StepEvents | None]) -> str | None:
    """Apply one record to ``world``; returns why it disagrees with the recording, if so."""
    if kind == PARAMS:
        values = json.loads(payload)["values"]
        try:
            world.set_params(params_from_mapping(values))
        except ParamsError as exc:
            return f"recorded parameters do not apply: {exc}"
    elif kind == JOIN:
        _tick, player_id, slot = unpack_member(payload)
        try:
            got = world.add_player(player_id)
        except WorldFullError as exc:
            return f"player {player_id} could not join: {exc}"
        if got != slot:
            return f"player {player_id} joined into slot {got}, recorded slot {slot}"
    elif kind == LEAVE:
        _tick, player_id, slot = unpack_member(payload)
        try:
            world.remove_player(slot)
        except ValueError as exc:
            return f"player {player_id} left slot {slot}: {exc}"
    elif kind in (INPUTS, PRE_MOVE):
        tick, rows = unpack_inputs(payload)
        if tick != world.tick:
            return f"inputs recorded for tick {tick}, replay is at tick {world.tick}"
        # Only the recorded rows move; reset the rest so a stale row never matters.
        inputs.move.fill(0.0)
        inputs.aim.fill(0.0)
        inputs.fire.fill(False)
        inputs.active.fill(False)
        slots = rows["slot"].astype(np.int64)
        inputs.move[slots, 0] = rows["move_x"]
        inputs.move[slots, 1] = rows["move_y"]
        inputs.aim[slots] = rows["aim"]
        inputs.fire[slots] = rows["fire"].astype(bool)
        inputs.active[slots] = True
        if kind == PRE_MOVE:
            pre_move(world, slots, inputs)
        else:
            last[0] = step(world, inputs)
            inputs.clear_views()
            result.steps += 1
    elif kind == VIEWS:
        tick, rows = unpack_views(payload)
        if tick != world.tick:
            return f"views recorded for tick {tick}, replay is at tick {world.tick}"
        slots = rows["slot"].astype(np.int64)
        inputs.view_a[slots] = rows["view_a"]
        inputs.view_b[slots] = rows["view_b"]
        inputs.view_blend[slots] = rows["blend"]
        inputs.rewind_limit[slots] = rows["limit"]
    elif kind == SHOTS:
        tick, rows = unpack_shots(payload)
        if tick != world.tick:
            return f"shots recorded for tick {tick}, replay is at tick {world.tick}"
        shots = last[0].hitscan if last[0] is not None else None
        got = ([] if shots is None
               else list(zip(shots.shooter.tolist(), shots.target.tolist(), strict=True)))
        want = list(zip(rows["shooter"].tolist(), rows["target"].tolist(), strict=True))
        if got != want:
            return f"hitscan shots (shooter, target) {got} != recorded {want}"
        result.shots_checked += len(want)
        result.hits_checked += sum(1 for _s, t in want if t >= 0)
    elif kind == HASH:
        tick, digest = unpack_hash(payload)
        if tick != world.tick:
            return f"hash recorded for tick {tick}, replay is at tick {world.tick}"
        actual = world.state_hash()
        if actual != digest:
            return f"state hash {actual} != recorded {digest}"
        result.hashes_checked += 1
        result.last_good_tick = tick
    else:
        raise RecordingError(f"{result.path}: unknown record type {kind}")
    return None


def run_replay(paths: Iterable[str | Path], out: TextIO | None = None) -> int:
    """Replay each file, print a line per file; 0 all matched, 1 a mismatch, 2 bad file."""
    stream = out if out is not None else sys.stdout
    code = 0
    for path in paths:
        try:
            result = replay_file(path)
        except (RecordingError, OSError) as exc:
            print(f"tickwire replay: {exc}", file=sys.stderr)
            code = max(code, 2)
            continue
        print(result.summary(), file=stream)
        if not result.ok:
            code = max(code, 1)
    return code


def add_replay_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-simulate a recording and check its state hashes")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="recording files written by `tickwire serve --record DIR`")
    p.set_defaults(func=lambda args: run_replay(args.files))
