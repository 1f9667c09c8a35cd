"""`RedisRegistry`: the fleet registry in Redis, each step one Lua script (atomic).

Keys (prefix `tw:` by default; TTLs are set with PEXPIRE on every write):

| key | type | TTL | holds |
|---|---|---|---|
| `node:{id}` | hash | lease | url, draining, load, rooms, max_rooms, `m:{mode}` = capacity |
| `node:{id}:rooms` | set | lease | rooms assigned to the node (it creates those it lacks) |
| `nodes` | zset | none | node -> load; dead entries are dropped when met |
| `room:{id}` | hash | lease | node, mode, players, capacity, private, created |
| `room:{id}:seats` | zset | keep | `r:{nonce}` reservation / `h:{nonce}` hold -> expiry ms |
| `public:{mode}` | zset | none | public room -> created ms; dead entries dropped when met |
| `modes` | set | none | modes that have had a public room |
| `req:{request_id}` | string | token TTL | the reservation answered to that request (JSON) |
| `secret` | string | none | the fleet's seat-token secret (re-set by every refresh) |

The scripts take the time from the caller (unix ms) so reservations expire on the same
clock as the seat tokens; key TTLs run on Redis's own clock. Scripts are registered with
the client (EVALSHA; reloaded by redis-py after a Redis restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.fleet.model import (
    MatchError,
    NodeInfo,
    NodeState,
    RefreshResult,
    RegistryUnavailable,
    Reservation,
    ReserveRequest,
    RoomInfo,
    RoomState,
    RoomView,
    SeatRefused,
)

log = logging.getLogger("tickwire.fleet")

_REFRESH = """
local P = ARGV[1]
local a = cjson.decode(ARGV[2])
local now, lease, keep = a.now, a.lease, a.keep
local nid = a.node
local nkey = P .. 'node:' .. nid
local rset = nkey .. ':rooms'
local reported, reserved, load = {}, {}, 0
for _, r in ipairs(a.rooms) do
  local rk = P .. 'room:' .. r.room
  local sk = rk .. ':seats'
  reported[r.room] = true
  redis.call('HSET', rk, 'node', nid, 'mode', r.mode, 'players', r.players,
             'capacity', r.capacity, 'private', r.private, 'created', r.created)
  redis.call('PEXPIRE', rk, lease)
  local counted = a.counted[r.room]
  if counted then
    for _, n in ipairs(counted) do redis.call('ZREM', sk, 'h:' .. n) end
  end
  redis.call('ZREMRANGEBYSCORE', sk, '-inf', now)
  local held = redis.call('ZCARD', sk)
  if held > 0 then redis.call('PEXPIRE', sk, keep) end
  reserved[r.room] = held
  load = load + r.players + held
  if r.private == 0 then
    redis.call('ZADD', P .. 'public:' .. r.mode, r.created, r.room)
    redis.call('SADD', P .. 'modes', r.mode)
  end
  redis.call('SADD', rset, r.room)
end
local assigned = {}
for _, id in ipairs(redis.call('SMEMBERS', rset)) do
  if not reported[id] then
    local h = redis.call('HMGET', P .. 'room:' .. id, 'node', 'mode', 'private')
    if h[1] == nid then
      assigned[#assigned + 1] = {id, h[2], h[3] == '1'}
    else
      redis.call('SREM', rset, id)
    end
  end
end
redis.call('PEXPIRE', rset, lease)
-- rooms assigned but not created yet count too (else `create` bursts pass max_rooms)
local fields = {'url', a.url, 'draining', a.draining, 'load', load,
                'rooms', #a.rooms + #assigned,
                'max_rooms', a.max_rooms, 'refreshed', now}
for m, cap in pairs(a.modes) do
  fields[#fields + 1] = 'm:' .. m
  fields[#fields + 1] = cap
end
redis.call('HSET', nkey, unpack(fields))
redis.call('PEXPIRE', nkey, lease)
redis.call('ZADD', P .. 'nodes', load, nid)
local secret = ''
if a.secret ~= '' then
  redis.call('SET', P .. 'secret', a.secret, 'NX')
  secret = redis.call('GET', P .. 'secret')
end
return cjson.encode({assigned = assigned, reserved = reserved, secret = secret})
"""

_RESERVE = """
local P = ARGV[1]
local q = cjson.decode(ARGV[2])
local now, mode = q.now, q.mode
if q.rid ~= '' then
  local prev = redis.call('GET', P .. 'req:' .. q.rid)
  if prev then return prev end
end
local function err(status, code, msg)
  return cjson.encode({error = code, status = status, message = msg})
end
local function taken(sk)
  redis.call('ZREMRANGEBYSCORE', sk, '-inf', now)
  return redis.call('ZCARD', sk)
end
local room, node, url, private, created = nil, nil, nil, false, false
if q.room ~= '' then
  local h = redis.call('HMGET', P .. 'room:' .. q.room,
                       'node', 'mode', 'players', 'capacity', 'private')
  local n = {}
  if h[1] then n = redis.call('HMGET', P .. 'node:' .. h[1], 'url', 'draining') end
  if not h[1] or not n[1] then
    return err(404, 'no_such_room', 'room ' .. q.room .. ' does not exist (or has closed)')
  end
  if n[2] == '1' then
    return err(409, 'room_closing', 'room ' .. q.room .. ' is on a node that is shutting down')
  end
  local free = tonumber(h[4]) - tonumber(h[3]) - taken(P .. 'room:' .. q.room .. ':seats')
  if free <= 0 then return err(409, 'room_full', 'room ' .. q.room .. ' is full') end
  room, node, url, mode, private = q.room, h[1], n[1], h[2], h[5] == '1'
else
  if not q.create then
    local zk = P .. 'public:' .. mode
    local best_free
    for _, id in ipairs(redis.call('ZRANGE', zk, 0, -1)) do
      local rk = P .. 'room:' .. id
      local h = redis.call('HMGET', rk, 'node', 'players', 'capacity')
      if not h[1] then
        redis.call('ZREM', zk, id)
      else
        local n = redis.call('HMGET', P .. 'node:' .. h[1], 'url', 'draining')
        if n[1] and n[2] ~= '1' then
          local free = tonumber(h[3]) - tonumber(h[2]) - taken(rk .. ':seats')
          if free > 0 and (not room or free < best_free) then
            room, node, url, best_free = id, h[1], n[1], free
          end
        end
      end
    end
  end
  if not room then
    local pick, pick_load, pick_rooms, pick_url, pick_cap
    local offered = false
    for _, id in ipairs(redis.call('ZRANGE', P .. 'nodes', 0, -1)) do
      local n = redis.call('HMGET', P .. 'node:' .. id,
                           'url', 'draining', 'load', 'rooms', 'max_rooms', 'm:' .. mode)
      if not n[1] then
        redis.call('ZREM', P .. 'nodes', id)
      elseif n[6] then
        offered = true
        local load, rooms = tonumber(n[3]), tonumber(n[4])
        if n[2] ~= '1' and rooms < tonumber(n[5]) and (not pick or load < pick_load
            or (load == pick_load and rooms < pick_rooms)) then
          pick, pick_load, pick_rooms, pick_url, pick_cap = id, load, rooms, n[1], n[6]
        end
      end
    end
    if not pick then
      if offered then
        return err(503, 'fleet_full', 'every node offering mode ' .. mode ..
                   ' is full or draining')
      end
      return err(404, 'unknown_mode', 'no node offers mode ' .. mode)
    end
    room, node, url, private, created = q.new_room, pick, pick_url, q.create, true
    local rk = P .. 'room:' .. room
    redis.call('HSET', rk, 'node', node, 'mode', mode, 'players', 0, 'capacity', pick_cap,
               'private', private and 1 or 0, 'created', now)
    redis.call('PEXPIRE', rk, q.lease)
    redis.call('SADD', P .. 'node:' .. node .. ':rooms', room)
    redis.call('PEXPIRE', P .. 'node:' .. node .. ':rooms', q.lease)
    redis.call('HINCRBY', P .. 'node:' .. node, 'rooms', 1)
    if not private then
      redis.call('ZADD', P .. 'public:' .. mode, now, room)
      redis.call('SADD', P .. 'modes', mode)
    end
  end
end
local exp = now + q.ttl
local sk = P .. 'room:' .. room .. ':seats'
redis.call('ZADD', sk, exp, 'r:' .. q.nonce)
redis.call('PEXPIRE', sk, q.keep)
redis.call('HINCRBY', P .. 'node:' .. node, 'load', 1)
redis.call('ZINCRBY', P .. 'nodes', 1, node)
local out = cjson.encode({room = room, node = node, url = url, mode = mode,
                          private = private, nonce = q.nonce, exp = exp, created = created})
if q.rid ~= '' then redis.call('SET', P .. 'req:' .. q.rid, out, 'PX', q.ttl) end
return out
"""

_CONSUME = """
local sk = ARGV[1] .. 'room:' .. ARGV[2] .. ':seats'
local now = tonumber(ARGV[4])
local score = redis.call('ZSCORE', sk, 'r:' .. ARGV[3])
if not score then return 'token_used' end
redis.call('ZREM', sk, 'r:' .. ARGV[3])
if tonumber(score) <= now then return 'token_expired' end
redis.call('ZADD', sk, now + tonumber(ARGV[5]), 'h:' .. ARGV[3])
redis.call('PEXPIRE', sk, ARGV[6])
return 'ok'
"""

_RETIRE = """
local P, node, room, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local rk = P .. 'room:' .. room
local sk = rk .. ':seats'
local h = redis.call('HMGET', rk, 'node', 'mode')
if h[1] and h[1] ~= node then
  redis.call('SREM', P .. 'node:' .. node .. ':rooms', room)
  return 1
end
redis.call('ZREMRANGEBYSCORE', sk, '-inf', now)
if redis.call('ZCARD', sk) > 0 then return 0 end
redis.call('DEL', rk, sk)
if h[2] then redis.call('ZREM', P .. 'public:' .. h[2], room) end
redis.call('SREM', P .. 'node:' .. node .. ':rooms', room)
return 1
"""

_LIST_ROOMS = """
local P, now = ARGV[1], ARGV[2]
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', P .. 'modes')) do
  local zk = P .. 'public:' .. m
  for _, id in ipairs(redis.call('ZRANGE', zk, 0, -1)) do
    local rk = P .. 'room:' .. id
    local h = redis.call('HMGET', rk, 'node', 'players', 'capacity', 'created')
    if not h[1] then
      redis.call('ZREM', zk, id)
    elseif redis.call('EXISTS', P .. 'node:' .. h[1]) == 1 then
      local taken = redis.call('ZCOUNT', rk .. ':seats', '(' .. now, '+inf')
      out[#out + 1] = {id, h[1], m, tonumber(h[2]), tonumber(h[3]),
                       tonumber(h[3]) - tonumber(h[2]) - taken, tonumber(h[4])}
    end
  end
end
return cjson.encode(out)
"""

_LIST_NODES = """
local P, now = ARGV[1], ARGV[2]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'nodes', 0, -1)) do
  local nk = P .. 'node:' .. id
  local h = redis.call('HGETALL', nk)
  if #h > 0 then
    local rooms = {}
    for _, rid in ipairs(redis.call('SMEMBERS', nk .. ':rooms')) do
      local rk = P .. 'room:' .. rid
      local r = redis.call('HMGET', rk, 'node', 'mode', 'players', 'capacity', 'private',
                           'created')
      if r[1] == id then
        local taken = redis.call('ZCOUNT', rk .. ':seats', '(' .. now, '+inf')
        rooms[#rooms + 1] = {rid, r[2], tonumber(r[3]), tonumber(r[4]), r[5] == '1',
                             tonumber(r[6]), tonumber(r[4]) - tonumber(r[3]) - taken}
      end
    end
    out[#out + 1] = {id, h, rooms}
  end
end
return cjson.encode(out)
"""

_DEREGISTER = """
local P, node = ARGV[1], ARGV[2]
local rset = P .. 'node:' .. node .. ':rooms'
for _, id in ipairs(redis.call('SMEMBERS', rset)) do
  local rk = P .. 'room:' .. id
  local h = redis.call('HMGET', rk, 'node', 'mode')
  if h[1] == node then
    redis.call('DEL', rk, rk .. ':seats')
    redis.call('ZREM', P .. 'public:' .. h[2], id)
  end
end
redis.call('DEL', rset, P .. 'node:' .. node)
redis.call('ZREM', P .. 'nodes', node)
return 1
"""

_SECRET = """
redis.call('SET', ARGV[1] .. 'secret', ARGV[2], 'NX')
return redis.call('GET', ARGV[1] .. 'secret')
"""


def redacted(url: str) -> str:
    """`url` with its password (and a username's password-like part) replaced by `***`.
    The message of an unreachable Redis reaches /healthz and every 503 of /matchmake,
    which anyone may read; `redis://:PASSWORD@host` must not."""
    parts = urlsplit(url)
    query = parts.query
    if "password" in query:  # redis-py also takes ?password=...
        query = urlencode([(k, "***" if k == "password" else v)
                           for k, v in parse_qsl(query, keep_blank_values=True)], safe="*")
    if parts.password is None and not parts.username:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***" if parts.password is not None and parts.username \
        else "***" if parts.password is None else ":***"
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, query, parts.fragment))


def _secret(text: str) -> bytes:
    """The shared seat-token secret as stored (hex); at least 16 bytes."""
    secret = bytes.fromhex(text)
    if text and len(secret) < 16:
        raise ValueError(f"the shared secret is {len(secret)} bytes; 16 or more expected")
    return secret


def _list(value: Any) -> list:
    """cjson encodes an empty table as {}: read it as an empty list."""
    return value if isinstance(value, list) else []


class RedisRegistry:
    """The registry in Redis (redis.asyncio with hiredis). Each call is bounded by
    `timeout_s` and never retried here: the node's loop retries on its own schedule, and
    a node must learn quickly that Redis is gone."""

    def __init__(self, url: str, *, prefix: str = "tw:", timeout_s: float = 1.0,
                 max_connections: int = 8) -> None:
        # Only ever shown (logs, /healthz, 503 answers to anyone): never with a password.
        self.url = redacted(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.malformed_rooms = 0  # rows of list_rooms left out (see _malformed_room)
        # A few connections are plenty (Redis runs one script at a time); a burst of
        # matchmakes waits for one, bounded by the same timeout, instead of failing.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0))
        self.client = aioredis.Redis(connection_pool=pool)
        self._refresh = self.client.register_script(_REFRESH)
        self._reserve = self.client.register_script(_RESERVE)
        self._consume = self.client.register_script(_CONSUME)
        self._retire = self.client.register_script(_RETIRE)
        self._list_rooms = self.client.register_script(_LIST_ROOMS)
        self._list_nodes = self.client.register_script(_LIST_NODES)
        self._deregister = self.client.register_script(_DEREGISTER)
        self._secret = self.client.register_script(_SECRET)

    async def _run(self, script: Any, *args: object) -> Any:
        try:
            return await asyncio.wait_for(script(keys=[], args=[self.prefix, *args]),
                                          self.timeout_s * 3)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RegistryUnavailable(f"redis at {self.url}: {type(exc).__name__}: "
                                      f"{exc or 'timed out'}") from exc

    async def refresh(self, node: NodeState, rooms: list[RoomState],
                      counted: dict[str, list[str]], now_ms: int, lease_ms: int,
                      keep_ms: int, secret: bytes = b"") -> RefreshResult:
        doc = {
            "node": node.node, "url": node.url, "draining": int(node.draining),
            "max_rooms": node.max_rooms, "modes": node.modes,
            "now": now_ms, "lease": lease_ms, "keep": keep_ms,
            "secret": secret.hex() if secret else "",
            "rooms": [{"room": r.room, "mode": r.mode, "players": r.players,
                       "capacity": r.capacity, "private": int(r.private),
                       "created": r.created_ms} for r in rooms],
            "counted": counted,
        }
        answer = await self._run(self._refresh, json.dumps(doc))
        with self._decoding("refresh"):
            raw = json.loads(answer)
            reserved = raw.get("reserved") or {}
            return RefreshResult(
                assigned=[(str(a[0]), str(a[1]), bool(a[2]))
                          for a in _list(raw.get("assigned"))],
                reserved={k: int(v) for k, v in reserved.items()}
                if isinstance(reserved, dict) else {},
                secret=_secret(raw.get("secret") or ""))

    async def reserve(self, req: ReserveRequest, keep_ms: int) -> Reservation:
        doc = {"mode": req.mode, "room": req.room, "create": req.create,
               "rid": req.request_id, "nonce": req.nonce, "new_room": req.new_room_id,
               "now": req.now_ms, "ttl": req.token_ttl_ms, "lease": req.lease_ms,
               "keep": keep_ms}
        answer = await self._run(self._reserve, json.dumps(doc))
        with self._decoding("reserve"):
            out = json.loads(answer)
            if "error" in out:
                raise MatchError(int(out["status"]), str(out["error"]), str(out["message"]))
            return Reservation(room=str(out["room"]), node=str(out["node"]),
                               url=str(out["url"]), mode=str(out["mode"]),
                               private=bool(out["private"]), nonce=str(out["nonce"]),
                               expires_ms=int(out["exp"]), created=bool(out["created"]))

    async def consume(self, room: str, nonce: str, now_ms: int, hold_ms: int,
                      keep_ms: int) -> None:
        result = await self._run(self._consume, room, nonce, now_ms, hold_ms, keep_ms)
        result = result.decode() if isinstance(result, bytes) else str(result)
        if result == "token_used":
            raise SeatRefused("token_used", "seat token already used or unknown")
        if result == "token_expired":
            raise SeatRefused("token_expired", "seat token expired")

    async def retire(self, node: str, room: str, now_ms: int) -> bool:
        return bool(await self._run(self._retire, node, room, now_ms))

    async def list_rooms(self, now_ms: int) -> list[RoomInfo]:
        answer = await self._run(self._list_rooms, now_ms)
        with self._decoding("list_rooms"):
            rows = _list(json.loads(answer))
        rooms = []
        for r in rows:
            try:
                rooms.append(RoomInfo(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]),
                                      int(r[5]), int(r[6])))
            except (TypeError, ValueError, IndexError, KeyError):
                # One malformed room (a hash with a field missing or not a number) is
                # left out; the rest of the fleet's rooms are still listed.
                self._malformed_room(r)
        return sorted(rooms, key=lambda r: (r.created_ms, r.room))

    async def list_nodes(self, now_ms: int) -> list[NodeInfo]:
        out = []
        for node_id, flat, rooms in _list(json.loads(await self._run(self._list_nodes,
                                                                     now_ms))):
            h = dict(zip(flat[::2], flat[1::2], strict=True))
            views = sorted((RoomView(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), int(r[5]),
                                     int(r[6])) for r in _list(rooms)),
                           key=lambda v: v.room)
            modes = {k[2:]: int(v) for k, v in h.items() if k.startswith("m:")}
            out.append(NodeInfo(node_id, h.get("url", ""), h.get("draining") == "1",
                                int(h.get("load", 0)), int(h.get("max_rooms", 0)), modes,
                                int(h.get("refreshed", 0)), views))
        return out

    async def deregister(self, node: str) -> None:
        await self._run(self._deregister, node)

    async def shared_secret(self, candidate: bytes) -> bytes:
        value = await self._run(self._secret, candidate.hex())
        with self._decoding("secret"):
            return _secret(value.decode() if isinstance(value, bytes) else value)

    @contextlib.contextmanager
    def _decoding(self, what: str) -> Iterator[None]:
        """An answer that is not what our scripts return (keys written by something else,
        a secret that is not hex) is the registry being unusable, like an unreachable
        one: RegistryUnavailable naming it, never a stray exception in the node's loop."""
        try:
            yield
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            # The answer itself is never quoted: a refresh's answer carries the fleet's
            # seat-token secret, and this message reaches /healthz.
            raise RegistryUnavailable(f"redis at {self.url} answered garbage to {what} "
                                      f"({type(exc).__name__})") from exc

    def _malformed_room(self, row: object) -> None:
        self.malformed_rooms += 1
        if self.malformed_rooms == 1 or self.malformed_rooms % 1000 == 0:
            log.warning("registry holds a malformed room, left out of the list: %s "
                        "(%d so far)", repr(row)[:120], self.malformed_rooms)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
