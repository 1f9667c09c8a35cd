"""The game simulation: parameters, world arrays and the step function (NumPy only, no I/O)."""

from sim.params import (
    DEFAULT_PARAMS_PATH,
    Params,
    ParamsError,
    load_params,
    params_from_mapping,
    restart_keys_changed,
    schema,
)
from sim.step import Inputs, StepEvents, find_hits, step
from sim.world import (
    FLAG_DEAD,
    FLAG_FIRED,
    KIND_EMPTY,
    KIND_NPC,
    KIND_PLAYER,
    KIND_PROJECTILE,
    World,
    WorldFullError,
)

__all__ = [
    "DEFAULT_PARAMS_PATH",
    "FLAG_DEAD",
    "FLAG_FIRED",
    "KIND_EMPTY",
    "KIND_NPC",
    "KIND_PLAYER",
    "KIND_PROJECTILE",
    "Inputs",
    "Params",
    "ParamsError",
    "StepEvents",
    "World",
    "WorldFullError",
    "find_hits",
    "load_params",
    "params_from_mapping",
    "restart_keys_changed",
    "schema",
    "step",
]
