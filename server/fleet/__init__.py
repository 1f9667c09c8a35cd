"""The fleet: nodes plus a registry (Redis, or in-process), matchmaking and seat tokens.

- `model`: what the registry stores and answers.
- `registry`: the `Registry` interface and `LocalRegistry` (one process, the default).
- `redis_registry`: `RedisRegistry`, the same rules as Lua scripts in Redis.
- `node`: `FleetNode`, the node's registry loop, matchmaking and the seat check.
- `app`: the aiohttp glue (routes, the loop's lifetime, drain order).

See docs/SCALING.md for the keys, the join flow and the failure cases.
"""

#: The environment variable `serve`, `fleet` and `bots` take the Redis URL from when
#: `--redis` is absent: unlike a command line (/proc/PID/cmdline, `ps`), a process's
#: environment is readable only by its own user, so a Redis password stays out of sight.
REDIS_URL_ENV = "TICKWIRE_REDIS_URL"
