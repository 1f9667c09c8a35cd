"""Bounds of a `tickwire bots` run, shared by the local runner and the Redis fleet."""

MAX_BOTS = 10_000
MAX_PROCS = 64
MAX_DURATION_S = 24 * 3600.0
JOIN_SLACK_S = 2.0  # how long the window waits for slow joins after the ramp
GRACE_S = 6.0  # beyond the window: workers leaving, last reports
READY_TIMEOUT_S = 30.0  # a worker importing numpy + aiohttp on a busy machine
