"""Record what changes a room's world, compactly, so a replay can re-simulate it.

Theory of operation
-------------------
The simulation is deterministic: the same world state, parameters and input stream give
the same arrays bit for bit. So a recording holds a starting state and everything that
changes the world afterwards, in order:

=============  ===========================================================================
record         payload
=============  ===========================================================================
CHECKPOINT     JSON header (room, tick, params, params_version, rng state, seats,
               history_depth) + every World array's raw bytes in ``sim.world`` order, then
               the hit-test history's arrays (``History.arrays``: hitscan shots after the
               checkpoint rewind into it). Each file starts with one.
PARAMS         JSON ``{"tick", "version", "values"}``: the parameters in force from ``tick``
JOIN / LEAVE   ``<q i i``: tick, player id, entity slot
PRE_MOVE       ``<q`` tick, then ``INPUT_ROW`` rows: an extra movement step for those players
               (a late command caught up) before the step of ``tick`` (``sim.step.pre_move``)
INPUTS         ``<q`` tick, then ``n`` rows of ``INPUT_ROW`` (slot, move x/y, aim, fire):
               the inputs of the players that move in the step ``tick`` -> ``tick + 1``
               (the others are inactive this tick)
VIEWS          ``<q`` tick, then ``VIEW_ROW`` rows (slot, view ticks a/b, blend, the room's
               rewind limit in ticks) for the players firing in the step ``tick``; written
               just before that tick's INPUTS (the limit depends on the measured RTT, so a
               replay cannot recompute it)
SHOTS          ``<q`` tick, then ``SHOT_ROW`` rows (shooter, target or -1): the hitscan shots
               of the step that made ``tick``, as the server resolved them; a replay
               compares its own
HASH           ``<q`` tick + 16-byte ``World.state_hash`` after ``tick`` ticks
=============  ===========================================================================

Ticks are ``world.tick`` values: INPUTS at tick ``t`` are applied by the step that makes
the world's tick ``t + 1``; a HASH at tick ``T`` is taken after that step.

File layout: ``MAGIC``, then blocks ``<I I`` (compressed length, raw length) + zlib data;
a block's raw bytes are records ``<B I`` (type, payload length) + payload. A block is
written at every HASH record (once a second by default), so a crash loses at most that
much. When a file reaches ``max_bytes`` the recorder starts the next file with a fresh
CHECKPOINT (so every file replays on its own) and deletes the oldest beyond ``keep``:
disk use is bounded by rooms x keep x max_bytes (plus one block).

The tick only appends records to a buffer; compression and file I/O run on one writer
thread per recorder, in order. A recording error disables the recorder (logged once)
rather than disturbing the game.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from sim.history import History
from sim.params import Params, params_from_mapping
from sim.step import HitscanShots, Inputs
from sim.world import ARRAYS, World

if TYPE_CHECKING:
    from aiohttp import web

    from server.control import ServerControl
    from server.room import Room

__all__ = [
    "INPUT_ROW",
    "MAGIC",
    "Checkpoint",
    "Record",
    "RecordingConfig",
    "RecordingError",
    "RoomRecorder",
    "check_directory",
    "prune_recordings",
    "read_records",
    "recording_ctx",
    "restore_world",
]

log = logging.getLogger("tickwire.recording")

MAGIC = b"TWREC\x01\n"
SUFFIX = ".twrec"

CHECKPOINT, PARAMS, JOIN, LEAVE, INPUTS, HASH, PRE_MOVE, VIEWS, SHOTS = 1, 2, 3, 4, 5, 6, 7, 8, 9
RECORD_NAMES = {CHECKPOINT: "checkpoint", PARAMS: "params", JOIN: "join", LEAVE: "leave",
                INPUTS: "inputs", HASH: "hash", PRE_MOVE: "pre_move", VIEWS: "views",
                SHOTS: "shots"}

_REC = struct.Struct("<BI")
_BLOCK = struct.Struct("<II")
PRUNE_EVERY_S = 60.0  # how often old recording files are deleted (retain_files)
MAX_PENDING_BLOCKS = 64  # about a minute of blocks at one per second
_MEMBER = struct.Struct("<qii")
_TICK = struct.Struct("<q")
INPUT_ROW = np.dtype([("slot", "<i4"), ("move_x", "<f4"), ("move_y", "<f4"),
                      ("aim", "<f4"), ("fire", "u1")])
VIEW_ROW = np.dtype([("slot", "<i4"), ("view_a", "<u4"), ("view_b", "<u4"),
                     ("blend", "<f4"), ("limit", "<f4")])
SHOT_ROW = np.dtype([("shooter", "<i4"), ("target", "<i4")])


class RecordingError(ValueError):
    """A recording file is not in this format or is damaged."""


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """Where and how much to record. Sizes in bytes; ``hash_every`` in ticks."""

    directory: Path
    max_bytes: int = 16 * 1024 * 1024
    keep: int = 4
    hash_every: int = 30
    retain_files: int = 64  # recording files kept in the directory, all rooms; 0 = all


def check_directory(directory: Path) -> str | None:
    """Why `directory` cannot hold recordings (one line), or None when it can: created if
    missing, and a file is written and removed there. Called at startup, so a bad
    `--record` stops the server before anyone joins."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the recording directory {directory}: {exc.strerror or exc}"
    if not directory.is_dir():
        return f"the recording directory {directory} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"cannot write in the recording directory {directory}: {exc.strerror or exc}"
    return None


def prune_recordings(directory: Path, retain: int, live: set[Path]) -> list[Path]:
    """Delete the oldest recording files beyond `retain` (by modification time), never
    one in `live` (being written). Returns what was deleted. Runs off the event loop."""
    if retain <= 0:
        return []
    try:
        files = [p for p in directory.glob(f"*{SUFFIX}") if p not in live]
        stamped = []
        for path in files:
            with contextlib.suppress(OSError):
                stamped.append((path.stat().st_mtime, path))
    except OSError:
        return []
    stamped.sort()
    excess = len(stamped) + len(live) - retain
    deleted = []
    for _, path in stamped[:max(0, excess)]:
        with contextlib.suppress(OSError):
            path.unlink()
            deleted.append(path)
    return deleted


# -- writing --------------------------------------------------------------------------------


def params_json(params: Params) -> dict[str, object]:
    return params.to_dotted()


def _input_rows(slots: np.ndarray, inputs: Inputs) -> bytes:
    rows = np.empty(len(slots), dtype=INPUT_ROW)
    rows["slot"] = slots
    rows["move_x"] = inputs.move[slots, 0]
    rows["move_y"] = inputs.move[slots, 1]
    rows["aim"] = inputs.aim[slots]
    rows["fire"] = inputs.fire[slots]
    return rows.tobytes()


def shot_rows(shots: HitscanShots) -> bytes:
    """A tick's hitscan shots as SHOT_ROW bytes (shooter, target)."""
    rows = np.empty(shots.shooter.size, dtype=SHOT_ROW)
    rows["shooter"] = shots.shooter
    rows["target"] = shots.target
    return rows.tobytes()


def _checkpoint_payload(room: Room) -> bytes:
    w = room.world
    header = {
        "room": room.room_id,
        "tick": w.tick,
        "params": params_json(w.params),
        "params_version": room.params_version,
        "rng": w.rng.bit_generator.state,
        "capacity": w.capacity,
        "seats": [[s.player_id, s.entity] for s in room.seats.values()],
        "history_depth": w.history.depth,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    arrays = b"".join(np.ascontiguousarray(getattr(w, name)).tobytes()
                      for name, _dtype, _tail in ARRAYS)
    arrays += b"".join(np.ascontiguousarray(a).tobytes() for a in w.history.arrays())
    return struct.pack("<I", len(head)) + head + arrays


class RoomRecorder:
    """Records one room into ``<directory>/<room>-<n>.twrec`` files (see module docstring).
    Attach with ``room.recorder = RoomRecorder(room, config)``; the constructor writes the
    first file's checkpoint, so attach before the room's world changes unrecorded."""

    def __init__(self, room: Room, config: RecordingConfig, *, prefix: str | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.config = config
        # Called once (from the writer thread, or the tick's) when recording stops.
        self.on_failure = on_failure
        self.prefix = prefix or room.room_id
        self.files: list[Path] = []
        self.bytes_written = 0
        self.failed = False
        self.closed = False
        self._file: IO[bytes] | None = None
        self._file_bytes = 0
        self._buf = bytearray()
        self._index = 0
        # Compression and file I/O happen on one worker thread, in submission order: a
        # slow disk must never delay a tick. The tick thread only serializes into _buf.
        # Ownership: `files`, `_index` and `_pending` belong to the tick thread; `_file`,
        # `_file_bytes` and `bytes_written` to the writer (the tick only reads them, and a
        # value one block late is fine for a size limit); `failed` is set by either.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rec-{self.prefix}")
        self._pending: list[Future] = []
        config.directory.mkdir(parents=True, exist_ok=True)
        self._open(room)

    # RoomRecorder protocol (server.room) -----------------------------------------------

    def on_join(self, room: Room, player_id: int, slot: int) -> None:
        self._add(JOIN, _MEMBER.pack(room.world.tick, player_id, slot))

    def on_leave(self, room: Room, player_id: int, slot: int) -> None:
        self._add(LEAVE, _MEMBER.pack(room.world.tick, player_id, slot))

    def on_params(self, room: Room) -> None:
        self._add(PARAMS, json.dumps({"tick": room.world.tick, "version": room.params_version,
                                      "values": params_json(room.params)}).encode())

    def on_pre_move(self, room: Room, slots: np.ndarray, inputs: Inputs) -> None:
        self._add(PRE_MOVE, _TICK.pack(room.world.tick) + _input_rows(slots, inputs))

    def on_inputs(self, room: Room, slots: np.ndarray, inputs: Inputs) -> None:
        tick = _TICK.pack(room.world.tick)
        firing = slots[inputs.fire[slots]]
        if firing.size and room.params.weapon_kind == "hitscan":
            rows = np.empty(firing.size, dtype=VIEW_ROW)
            rows["slot"] = firing
            rows["view_a"] = inputs.view_a[firing]
            rows["view_b"] = inputs.view_b[firing]
            rows["blend"] = inputs.view_blend[firing]
            rows["limit"] = inputs.rewind_limit[firing]
            self._add(VIEWS, tick + rows.tobytes())
        self._add(INPUTS, tick + _input_rows(slots, inputs))

    def on_stepped(self, room: Room) -> None:
        tick = room.world.tick
        events = getattr(room, "last_events", None)
        if events is not None and events.hitscan is not None:
            self._add(SHOTS, _TICK.pack(tick) + shot_rows(events.hitscan))
        if tick % self.config.hash_every or self.closed or self.failed:
            return
        self._add(HASH, _TICK.pack(tick) + bytes.fromhex(room.world.state_hash()))
        self._flush()
        # Rotate only here, between two ticks, where a checkpoint is a consistent state.
        # (_file_bytes is updated by the writer thread; a block late is fine for a limit.)
        if self._file_bytes >= self.config.max_bytes:
            self._open(room)

    def close(self, *, wait: bool = True) -> None:
        """Write what is buffered and close the file (idempotent); later events are ignored.
        `wait`: block until the writer thread is done, so the files are complete when this
        returns (at shutdown); a room disposed of mid-game passes False, since that runs
        inside a tick."""
        if self.closed:
            if wait:
                self._io.shutdown(wait=True)  # an earlier close may not have waited
            return
        self._flush()
        self._submit(self._close_file)
        self.closed = True
        self._io.shutdown(wait=wait)

    # internals -----------------------------------------------------------------------

    def _add(self, kind: int, payload: bytes) -> None:
        if self.failed or self.closed:
            return
        self._buf += _REC.pack(kind, len(payload))
        self._buf += payload

    def _open(self, room: Room) -> None:
        if self.failed:
            return
        self._index += 1
        path = self.config.directory / f"{self.prefix}-{self._index:05d}{SUFFIX}"
        self.files.append(path)
        stale = self.files[: -self.config.keep]
        del self.files[: -self.config.keep]
        self._submit(self._open_file, path, stale)
        # The checkpoint is taken now, on the tick thread: it must be this tick's state.
        self._add(CHECKPOINT, _checkpoint_payload(room))
        self._flush()

    def _open_file(self, path: Path, stale: list[Path]) -> None:
        """Writer thread: start a new file and delete the ones beyond `keep`."""
        self._close_file()
        try:
            self._file = path.open("wb")
            self._file.write(MAGIC)
        except OSError:
            self._fail(f"cannot open {path}")
            return
        self._file_bytes = len(MAGIC)
        for old in stale:
            with contextlib.suppress(OSError):
                old.unlink()

    def _flush(self) -> None:
        if self.failed or not self._buf:
            return
        raw = bytes(self._buf)
        self._buf.clear()
        self._submit(self._write_block, raw)

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        """Queue work for the writer; a disk that cannot keep up (more than
        MAX_PENDING_BLOCKS waiting) stops the recording rather than growing memory."""
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= MAX_PENDING_BLOCKS:
            self._buf.clear()
            self._stop("the disk is too slow", pending=len(self._pending))
            return
        self._pending.append(self._io.submit(fn, *args))

    def _write_block(self, raw: bytes) -> None:
        """Writer thread: one zlib block."""
        if self.failed or self._file is None:
            return
        packed = zlib.compress(raw, 6)
        try:
            self._file.write(_BLOCK.pack(len(packed), len(raw)) + packed)
            self._file.flush()
        except OSError:
            self._fail("cannot write")
            return
        n = _BLOCK.size + len(packed)
        self._file_bytes += n
        self.bytes_written += n

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _fail(self, what: str) -> None:
        """Writer thread, inside an `except OSError`: stop recording this room (the server
        goes on) and close the file."""
        exc = sys.exc_info()[1]
        self._stop(f"{what}: {exc}" if exc is not None else what)
        self._close_file()

    def _stop(self, why: str, **fields: object) -> None:
        """Stop recording; one log line and `on_failure`, the first time only."""
        if self.failed:
            return
        self.failed = True
        log.error("recording stopped: %s", why, extra={"prefix": self.prefix, **fields})
        if self.on_failure is not None:
            self.on_failure(why)


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    kind: int
    payload: bytes

    @property
    def name(self) -> str:
        return RECORD_NAMES.get(self.kind, f"unknown({self.kind})")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    history: list[np.ndarray] | None = None  # None: a file from before hitscan


def read_records(path: str | Path, *, on_truncated: Callable[[str], None] | None = None
                 ) -> Iterator[Record]:
    """Every record of a recording file in order. Raises ``RecordingError`` for a file
    that is not a recording or a damaged block; a file cut short inside its last block (a
    crash) ends the iteration after calling ``on_truncated`` with a description."""
    with Path(path).open("rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise RecordingError(f"{path}: not a Tickwire recording")
        while True:
            head = fh.read(_BLOCK.size)
            if not head:
                return
            if len(head) < _BLOCK.size:
                if on_truncated:
                    on_truncated(f"{path}: truncated block header")
                return
            packed_len, raw_len = _BLOCK.unpack(head)
            packed = fh.read(packed_len)
            if len(packed) < packed_len:
                if on_truncated:
                    on_truncated(f"{path}: truncated block")
                return
            try:
                raw = zlib.decompress(packed)
            except zlib.error as exc:
                raise RecordingError(f"{path}: damaged block: {exc}") from exc
            if len(raw) != raw_len:
                raise RecordingError(f"{path}: block length mismatch")
            yield from _split(raw, path)


def _split(raw: bytes, path: str | Path) -> Iterator[Record]:
    at = 0
    while at < len(raw):
        if at + _REC.size > len(raw):
            raise RecordingError(f"{path}: record header crosses a block end")
        kind, n = _REC.unpack_from(raw, at)
        at += _REC.size
        if at + n > len(raw):
            raise RecordingError(f"{path}: record crosses a block end")
        yield Record(kind, raw[at:at + n])
        at += n


def write_records(path: str | Path, records: list[Record]) -> None:
    """Write ``records`` as a recording file in one block (tests and tools)."""
    raw = b"".join(_REC.pack(r.kind, len(r.payload)) + r.payload for r in records)
    packed = zlib.compress(raw)
    Path(path).write_bytes(MAGIC + _BLOCK.pack(len(packed), len(raw)) + packed)


def parse_checkpoint(payload: bytes) -> Checkpoint:
    (head_len,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4:4 + head_len])
    capacity = int(header["capacity"])
    at = 4 + head_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, tail in ARRAYS:
        shape = (capacity, *tail)
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if at + n > len(payload):
            raise RecordingError("checkpoint is shorter than its arrays")
        arrays[name] = np.frombuffer(payload, dtype=dtype, count=int(np.prod(shape)),
                                     offset=at).reshape(shape).copy()
        at += n
    history = None
    if "history_depth" in header:
        template = History(capacity, int(header["history_depth"])).arrays()
        history = []
        for a in template:
            if at + a.nbytes > len(payload):
                raise RecordingError("checkpoint is shorter than its history")
            history.append(np.frombuffer(payload, dtype=a.dtype, count=a.size,
                                         offset=at).reshape(a.shape).copy())
            at += a.nbytes
    return Checkpoint(header, arrays, history)


def restore_world(cp: Checkpoint) -> World:
    """The World a checkpoint describes: arrays, tick, parameters and generator state."""
    params = params_from_mapping(cp.header["params"])
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = cp.header["rng"]
    world = World(params, rng)
    world.tick = int(cp.header["tick"])
    for name, array in cp.arrays.items():
        setattr(world, name, array)
    if cp.history is not None:
        depth = int(cp.header["history_depth"])
        if depth != world.history.depth:
            world.history = History(world.capacity, depth)
        world.history.restore(cp.history)
    return world


def unpack_member(payload: bytes) -> tuple[int, int, int]:
    """(tick, player id, slot) of a JOIN or LEAVE record."""
    return _MEMBER.unpack(payload)


def unpack_inputs(payload: bytes) -> tuple[int, np.ndarray]:
    """(tick, INPUT_ROW rows) of an INPUTS or PRE_MOVE record."""
    (tick,) = _TICK.unpack_from(payload)
    return tick, np.frombuffer(payload, dtype=INPUT_ROW, offset=_TICK.size)


def unpack_views(payload: bytes) -> tuple[int, np.ndarray]:
    """(tick, VIEW_ROW rows) of a VIEWS record."""
    (tick,) = _TICK.unpack_from(payload)
    return tick, np.frombuffer(payload, dtype=VIEW_ROW, offset=_TICK.size)


def unpack_shots(payload: bytes) -> tuple[int, np.ndarray]:
    """(tick, SHOT_ROW rows) of a SHOTS record."""
    (tick,) = _TICK.unpack_from(payload)
    return tick, np.frombuffer(payload, dtype=SHOT_ROW, offset=_TICK.size)


def unpack_hash(payload: bytes) -> tuple[int, str]:
    """(tick, hex digest) of a HASH record."""
    (tick,) = _TICK.unpack_from(payload)
    return tick, payload[_TICK.size:].hex()


# -- the server hook ------------------------------------------------------------------------


def recording_ctx(server: ServerControl, config: RecordingConfig
                  ) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: every room the lobby creates gets a recorder
    (files named ``<room>-<start time>-<n>``, so a restarted server never overwrites an
    older recording); all recorders are closed when the app stops.

    A recorder that cannot start or stops later (disk full, directory gone) leaves its
    room running unrecorded, with one log line and ``tickwire_recording_failures_total``.
    Files beyond ``config.retain_files`` (oldest first, never one being written) are
    deleted at start and every ``PRUNE_EVERY_S``, off the event loop.
    """
    import asyncio
    import time

    recorders: list[RoomRecorder] = []
    started = time.strftime("%Y%m%dT%H%M%S")
    failures = server.metrics.recording_failures

    def failed(why: str) -> None:
        failures.inc()

    def attach(room: Room) -> None:
        # Rooms come and go: forget the recorders of disposed rooms (Lobby.reap closed them).
        recorders[:] = [r for r in recorders if not r.closed]
        try:
            recorder = RoomRecorder(room, config, prefix=f"{room.room_id}-{started}",
                                    on_failure=failed)
        except OSError as exc:
            failures.inc()
            log.error("recording stopped: cannot start recording room %s: %s",
                      room.room_id, exc, extra={"room": room.room_id})
            return
        room.recorder = recorder
        recorders.append(recorder)
        log.info("recording room", extra={"room": room.room_id,
                                          "path": str(recorder.files[-1]) if recorder.files
                                          else None})

    def live_files() -> set[Path]:
        return {path for r in recorders if not r.closed for path in r.files}

    async def prune_loop() -> None:
        while True:
            deleted = await asyncio.to_thread(prune_recordings, config.directory,
                                              config.retain_files, live_files())
            if deleted:
                server.metrics.recordings_deleted.inc(len(deleted))
                log.info("deleted %d old recording files (keeping %d)", len(deleted),
                         config.retain_files, extra={"deleted": len(deleted)})
            await asyncio.sleep(PRUNE_EVERY_S)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server.set_room_hook(attach)
        pruner = asyncio.get_running_loop().create_task(prune_loop(), name="record-prune")
        yield
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner
        server.set_room_hook(None)
        for recorder in recorders:
            recorder.close()

    return ctx
