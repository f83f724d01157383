"""The Lua scripts of the Redis budget (:mod:`multiagent.models.budget_redis`).

Each script runs atomically on the server, so processes on any machine reserve against one
total. Amounts are integers of nano-USD (1e-9 USD): exact sums, no float drift. Times are the
server's (``TIME``), in milliseconds; no process's clock is trusted.

A budget at ``BASE`` (``multiagent:budget:project:d<epoch day>`` for the daily cap, or
``multiagent:budget:batch:<id>`` / ``thread:<id>``) is four keys:

- ``BASE``: a hash with ``cap``, ``spent`` (settled), ``held`` (live reservations), ``calls``
  (settled calls) and ``expired`` (reservations whose lease ran out);
- ``BASE:holds``: reservation id → ``"<nano-USD>|<owner>"``;
- ``BASE:leases``: reservation id scored by the time its lease ends (pushed back by ``RENEW``
  while the process holding it lives: :mod:`._budget_leases`);
- ``BASE:done``: ids already settled, so a settlement sent twice (a reply lost with the
  connection, then sent again) counts once.

Every write refreshes the keys' TTL: a daily budget disappears a while after its day.

An admitted item of a queued batch holds its whole worst case as one reservation; its calls
draw on it (``<hold>><draw id>``, counted once each: spent grows, the hold shrinks; a call
drawn from several holds is one settled call, its later draws' ids ending with ``+``) rather than
reserving, and the item's end closes it (``<hold>>``: what is left goes back). Draws and the
close are settlements like any other, sent in order, so what the hold frees is spent first.

Settlements travel with the next reservation (``RESERVE`` settles the ones it is given before it
reserves) or, when no reservation follows soon, several in one ``SETTLE``: one round trip per
call in a steady stream of calls instead of two.
"""

from __future__ import annotations

#: Shared by every script: the server's time, and expired leases given back.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function sweep(base)
  local dead = redis.call('ZRANGEBYSCORE', base .. ':leases', '-inf', now)
  for _, rid in ipairs(dead) do
    local v = redis.call('HGET', base .. ':holds', rid)
    if v then
      redis.call('HDEL', base .. ':holds', rid)
      redis.call('HINCRBY', base, 'held', -tonumber(string.match(v, '^(%d+)')))
      redis.call('HINCRBY', base, 'expired', 1)
    end
    redis.call('ZREM', base .. ':leases', rid)
  end
end
local function touch(base, ttl)
  for _, key in ipairs({base, base .. ':holds', base .. ':leases', base .. ':done'}) do
    redis.call('EXPIRE', key, ttl)
  end
end
local function field(base, name)
  return tonumber(redis.call('HGET', base, name) or '0')
end
-- a draw '<hold>><draw id>' counts what a call of an admitted item spent and takes it off the
-- item's hold (what the hold has not left is spent beyond it, still counted: it was paid);
-- '<hold>>' (no draw id) closes the hold: what it has left is given back
local function draw(base, rid, amount)
  local hold, id = string.match(rid, '^(.*)>(.*)$')
  local v = redis.call('HGET', base .. ':holds', hold)
  if id == '' then
    if v then  -- (0 - n, not -n: a hold drawn to 0 would be sent as '-0', not an integer)
      redis.call('HDEL', base .. ':holds', hold)
      redis.call('HINCRBY', base, 'held', 0 - tonumber(string.match(v, '^(%d+)')))
    end
    redis.call('ZREM', base .. ':leases', hold)
    return 0
  end
  if redis.call('SADD', base .. ':done', rid) == 0 then return 0 end
  if v then
    local left, owner = string.match(v, '^(%d+)|(.*)$')
    local take = math.min(tonumber(left), tonumber(amount))
    redis.call('HSET', base .. ':holds', hold, (tonumber(left) - take) .. '|' .. owner)
    redis.call('HINCRBY', base, 'held', 0 - take)
  end
  redis.call('HINCRBY', base, 'spent', amount)
  -- a call drawn from several holds is one call: its later parts end with '+'
  if string.sub(id, -1) ~= '+' then redis.call('HINCRBY', base, 'calls', 1) end
  return 1
end
-- settlements given as KEYS[first..] (their bases) and ARGV[at..] (id, nano-USD pairs), each
-- counted once (an id settled before is skipped); returns how many were counted
local function settle_many(first, at, count, ttl)
  local counted, touched = 0, {}
  for i = 0, count - 1 do
    local base, rid = KEYS[first + i], ARGV[at + 2 * i]
    if not touched[base] then sweep(base) end
    if string.find(rid, '>', 1, true) then
      counted = counted + draw(base, rid, ARGV[at + 2 * i + 1])
    elseif redis.call('SADD', base .. ':done', rid) == 1 then
      local v = redis.call('HGET', base .. ':holds', rid)
      if v then
        redis.call('HDEL', base .. ':holds', rid)
        redis.call('HINCRBY', base, 'held', -tonumber(string.match(v, '^(%d+)')))
      end
      redis.call('ZREM', base .. ':leases', rid)
      redis.call('HINCRBY', base, 'spent', ARGV[at + 2 * i + 1])
      redis.call('HINCRBY', base, 'calls', 1)
      counted = counted + 1
    end
    if not touched[base] then touch(base, ttl); touched[base] = true end
  end
  return counted
end
local function base_of(prefix, daily)
  if daily == '1' then
    local day = 'd' .. math.floor(tonumber(t[1]) / 86400)
    return prefix .. ':' .. day, day
  end
  return prefix, ''
end
"""

#: KEYS[1] prefix, KEYS[2..n+1] the bases of n settlements sent along; ARGV: id, nano-USD,
#: lease ms, cap ('' = the stored one), owner, TTL s, daily ('1'/'0'), n, then n pairs of
#: (settled id, nano-USD spent). The settlements are counted first (they free what they held),
#: in every case. Returns {admitted (1, 0, or -1 for no cap), period, spent, held, cap}.
RESERVE = (
    _PRELUDE
    + """
settle_many(2, 9, tonumber(ARGV[8]), ARGV[6])
local base, period = base_of(KEYS[1], ARGV[7])
sweep(base)
if ARGV[4] ~= '' then redis.call('HSET', base, 'cap', ARGV[4]) end
local cap = tonumber(redis.call('HGET', base, 'cap') or '-1')
local spent, held = field(base, 'spent'), field(base, 'held')
if cap < 0 then return {-1, period, spent, held, 0} end
if spent + held + tonumber(ARGV[2]) > cap then return {0, period, spent, held, cap} end
redis.call('HSET', base .. ':holds', ARGV[1], ARGV[2] .. '|' .. ARGV[5])
redis.call('ZADD', base .. ':leases', now + tonumber(ARGV[3]), ARGV[1])
redis.call('HINCRBY', base, 'held', ARGV[2])
touch(base, ARGV[6])
return {1, period, spent, held + tonumber(ARGV[2]), cap}
"""
)

#: KEYS: the bases of n settlements; ARGV: TTL s, then n pairs of (id, nano-USD spent).
#: Returns how many were counted (an id settled before is not counted again).
SETTLE = (
    _PRELUDE
    + """
return settle_many(1, 2, #KEYS, ARGV[1])
"""
)

#: KEYS[1] the budget's base; ARGV: id. Gives a reservation back unused.
RELEASE = (
    _PRELUDE
    + """
local base = KEYS[1]
sweep(base)
local v = redis.call('HGET', base .. ':holds', ARGV[1])
if v then
  redis.call('HDEL', base .. ':holds', ARGV[1])
  redis.call('HINCRBY', base, 'held', -tonumber(string.match(v, '^(%d+)')))
end
redis.call('ZREM', base .. ':leases', ARGV[1])
return v and 1 or 0
"""
)

#: KEYS: the bases of a process's holds; ARGV: for each base in turn, n, then n pairs of (id, lease
#: ms). Expired leases are swept first, so a hold that ended is not brought back, and ``ZADD XX``
#: renews only leases still there (not one settled or released meanwhile). Returns how many
#: leases were renewed.
RENEW = (
    _PRELUDE
    + """
local at, renewed = 1, 0
for _, base in ipairs(KEYS) do
  sweep(base)
  local n = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, n do
    local ends = now + tonumber(ARGV[at + 1])
    renewed = renewed + redis.call('ZADD', base .. ':leases', 'XX', 'CH', ends, ARGV[at])
    at = at + 2
  end
end
return renewed
"""
)

#: KEYS[1] prefix; ARGV: daily. Returns {period, cap (-1 none), spent, held, calls, expired,
#: owner, nano-USD, owner, nano-USD...}: live holds summed per owner (nothing changed).
REPORT = (
    _PRELUDE
    + """
local base, period = base_of(KEYS[1], ARGV[1])
local cap = tonumber(redis.call('HGET', base, 'cap') or '-1')
local holds = redis.call('HGETALL', base .. ':holds')
local owners, order, held = {}, {}, 0
for i = 1, #holds, 2 do
  local ends = tonumber(redis.call('ZSCORE', base .. ':leases', holds[i]) or '0')
  if ends > now then
    local amount, owner = string.match(holds[i + 1], '^(%d+)|(.*)$')
    if owners[owner] == nil then owners[owner] = 0; table.insert(order, owner) end
    owners[owner] = owners[owner] + tonumber(amount)
    held = held + tonumber(amount)
  end
end
local out = {period, cap, field(base, 'spent'), held, field(base, 'calls'), field(base, 'expired')}
for _, owner in ipairs(order) do
  table.insert(out, owner)
  table.insert(out, owners[owner])
end
return out
"""
)
