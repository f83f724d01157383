"""The Lua scripts of the shared controller: every change of its Redis state is one of these.

Each script reads the server's clock (``TIME``), so every process decides on one clock however
far apart their own clocks are. Times are seconds since the epoch (floats written with 17
significant digits: Lua's ``tostring`` keeps 14, a tenth of a millisecond at today's epoch).
Replies carry numbers as strings (Redis would truncate a Lua float to an integer).

Keys of one (provider, base URL, model) ``P`` (see :func:`keys_for`): ``P:state`` (a hash: the
pace, the limit, the GCRA arrival times, the last send, counters), ``P:leases`` (a sorted set
of tickets holding a slot, scored by the lease's deadline), ``P:sends`` / ``P:answers`` /
``P:refused`` (the last ``window_s`` of send, answer and refused-send times, for measuring a
capacity across processes), ``P:procs`` (processes by last heartbeat); and per endpoint
``G:gate`` (the server time before which nothing may be sent: the shared Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass

_PRELUDE = """
local function fmt(x) return string.format('%.17g', x) end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function gate_of(key)
  local g = redis.call('GET', key)
  if g then return tonumber(g) end
  return 0
end
"""

#: KEYS: state leases gate sends procs want. ARGV: lease tokens lease_s proc booked_slot
#: booked_epoch want_s alive_s still_wanting. Reply: {verdict, due, slot, epoch, now}; verdict
#: ``go`` (sent now), ``wait`` (until due), ``slot`` (no free slot for this process), ``init``
#: (no state yet: run INIT, then ask again).
#:
#: Slots are shared fairly between processes: ``want`` holds the processes refused a slot in the
#: last ``want_s``; while another process wants one, a process already holding its share of the
#: limit (the limit divided by the processes alive in the last ``alive_s``) is refused too, so
#: the freed slot goes to the one below its share (each process wakes one waiter per freed slot:
#: without this the quickest process wins the race and one process fell to 9% of the goodput).
#: A process stays in ``want`` while other requests of it still wait for a slot
#: (``still_wanting`` 1): ``RELEASE`` announces a freed slot only while someone wants one.
ACQUIRE = (
    _PRELUDE
    + """
local now = clock()
if redis.call('EXISTS', KEYS[1]) == 0 then return {'init', fmt(now), '', '', fmt(now)} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local s = redis.call('HMGET', KEYS[1], 'limit', 'rate', 'mult', 'tat', 'tatk', 'epoch',
  'burst', 'tps')
local lease = ARGV[1]
if not redis.call('ZSCORE', KEYS[2], lease) then
  local limit = math.max(1, math.floor(tonumber(s[1])))
  local proc = ARGV[4]
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - tonumber(ARGV[7]))
  local full = redis.call('ZCARD', KEYS[2]) >= limit
  if full then
    redis.call('HSET', KEYS[1], 'f_sat', 1)  -- the limit held a request back (not fairness)
  else
    local others = redis.call('ZCARD', KEYS[6])
    if redis.call('ZSCORE', KEYS[6], proc) then others = others - 1 end
    if others > 0 then
      local procs = math.max(1, redis.call('ZCOUNT', KEYS[5], now - tonumber(ARGV[8]), '+inf'))
      local prefix, mine = proc .. '#', 0
      for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
        if string.sub(member, 1, #prefix) == prefix then mine = mine + 1 end
      end
      full = mine >= math.ceil(limit / procs)
    end
  end
  if full then
    redis.call('ZADD', KEYS[6], now, proc)
    return {'slot', fmt(now), '', s[6], fmt(now)}
  end
  if ARGV[9] ~= '1' then redis.call('ZREM', KEYS[6], proc) end
end
local gate = gate_of(KEYS[3])
local epoch = tonumber(s[6])
local slot = tonumber(ARGV[5])
if slot == nil or tonumber(ARGV[6]) ~= epoch then
  local rate, mult, burst, tps = tonumber(s[2]), tonumber(s[3]), tonumber(s[7]), tonumber(s[8])
  local tat, tatk = tonumber(s[4]), tonumber(s[5])
  local tokens = tonumber(ARGV[2])
  slot = math.max(now, gate, tat - burst)
  if tps > 0 and tokens > 0 then
    slot = math.max(slot, tatk - burst)
    tatk = math.max(tatk, slot) + mult * tokens / tps
  end
  tat = math.max(tat, slot) + mult / rate
  redis.call('HSET', KEYS[1], 'tat', fmt(tat), 'tatk', fmt(tatk))
end
local ttl = tonumber(ARGV[3])
if gate > slot then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  return {'wait', fmt(gate), '', s[6], fmt(now)}
end
if slot > now + 0.000001 then
  redis.call('ZADD', KEYS[2], slot + ttl, lease)
  redis.call('HSET', KEYS[1], 'f_pb', 1)
  return {'wait', fmt(slot), fmt(slot), s[6], fmt(now)}
end
redis.call('ZADD', KEYS[2], now + ttl, lease)
redis.call('ZADD', KEYS[4], now, lease)
redis.call('ZADD', KEYS[5], now, ARGV[4])
redis.call('HSET', KEYS[1], 'last', fmt(now))  -- the last send, by any process (see APPLY)
return {'go', fmt(now), fmt(slot), s[6], fmt(now)}
"""
)

#: KEYS: state leases gate answers refused sends want. ARGV: lease kind sent_at epoch
#: retry_after window_s channel want_s. Reply: {now, version, advertised rps, advertised tps,
#: removed}. A freed slot is published only while a process wants one (refused in the last
#: ``want_s``): otherwise every process's keeper would wake for every call of every process.
RELEASE = (
    _PRELUDE
    + """
local now = clock()
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
local kind = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
  if kind == 'ok' then
    redis.call('ZADD', KEYS[4], now, ARGV[1])
  elseif kind == 'rate_limit' then
    redis.call('HINCRBY', KEYS[1], 'r429', 1)
    redis.call('HSET', KEYS[1], 'f_rl', 1)
    redis.call('ZADD', KEYS[5], tonumber(ARGV[3]), ARGV[1])
    local wait = tonumber(ARGV[5])
    if wait then
      local gate = gate_of(KEYS[3])
      local resume = now + wait
      if resume > gate then
        redis.call('SET', KEYS[3], fmt(resume), 'PX', math.ceil(wait * 1000) + 600000)
        redis.call('HINCRBYFLOAT', KEYS[1], 'paused_total', resume - math.max(now, gate))
        redis.call('HINCRBY', KEYS[1], 'pauses', 1)
        local s = redis.call('HMGET', KEYS[1], 'tat', 'tatk', 'burst')
        local start = resume + tonumber(s[3])
        redis.call('HSET', KEYS[1], 'tat', fmt(math.max(tonumber(s[1]), start)),
          'tatk', fmt(math.max(tonumber(s[2]), start)))
      end
    end
  elseif kind == 'error' then
    local s = redis.call('HMGET', KEYS[1], 'tat', 'epoch', 'mult', 'rate')
    local tat = tonumber(s[1])
    if tonumber(ARGV[4]) == tonumber(s[2]) and tat > now then
      redis.call('HSET', KEYS[1], 'tat', fmt(tat - tonumber(s[3]) / tonumber(s[4])))
    end
  end
  local horizon = now - tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', horizon)
end
if removed == 1 and redis.call('ZCOUNT', KEYS[7], now - tonumber(ARGV[8]), '+inf') > 0 then
  redis.call('PUBLISH', ARGV[7], '1')
end
local a = redis.call('HMGET', KEYS[1], 'v', 'adv_rps', 'adv_tps')
return {fmt(now), a[1] or '', a[2] or '', a[3] or '', removed}
"""
)

#: KEYS: state gate. ARGV: field value ... (written only when the state does not exist).
INIT = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = clock()
redis.call('HSET', KEYS[1], unpack(ARGV))
-- no burst credit for a pace nobody has confirmed yet: the first sends are spaced
local start = math.max(now, gate_of(KEYS[2])) + tonumber(redis.call('HGET', KEYS[1], 'burst'))
redis.call('HSET', KEYS[1], 'start', fmt(now), 'lasttick', fmt(now), 'tat', fmt(start),
  'tatk', fmt(start))
return 1
"""
)

#: KEYS: state gate leases procs. ARGV: alive_s. Reply: {now, gate, processes, state...,
#: '|', lease member, deadline, ...}.
SNAPSHOT = (
    _PRELUDE
    + """
local now = clock()
local reply = {fmt(now), fmt(gate_of(KEYS[2])),
  tostring(redis.call('ZCOUNT', KEYS[4], now - tonumber(ARGV[1]), '+inf'))}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do table.insert(reply, v) end
table.insert(reply, '|')
for _, v in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf', 'WITHSCORES')) do
  table.insert(reply, v)
end
return reply
"""
)

#: KEYS: state gate. ARGV: expected_version rebook tat_cap field value ...
#: Applies a decision only if nobody changed the state since it was read (reply 1, else 0).
#: ``rebook``: 0 keeps the booked slots; 1 voids them, the new pace's first slot at once (after
#: the gate); 2 voids them, its first slot one interval of the new pace after the last send (by
#: any process). A 429 with no Retry-After (a gateway's ``limit_req`` answers so, at once)
#: pauses nothing: with a first slot at once, each refusal cut the pace, rebooked and let the
#: next waiting request go, and the waiting requests of every process went back to back into a
#: wall of 429s that drove the pace to its floor.
APPLY = (
    _PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
local now = clock()
local burst = tonumber(redis.call('HGET', KEYS[1], 'burst'))
if #ARGV > 3 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
local more = tonumber(redis.call('HGET', KEYS[1], 'burst')) - burst
if more > 0 then
  -- burst credit granted now accrues from here on (idle time), none at once
  local s = redis.call('HMGET', KEYS[1], 'tat', 'tatk')
  redis.call('HSET', KEYS[1], 'tat', fmt(math.max(tonumber(s[1]), now) + more),
    'tatk', fmt(math.max(tonumber(s[2]), now) + more))
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
if ARGV[2] == '1' or ARGV[2] == '2' then
  local s = redis.call('HMGET', KEYS[1], 'burst', 'last', 'mult', 'rate')
  local start = math.max(now, gate_of(KEYS[2]))
  if ARGV[2] == '2' and s[2] then
    start = math.max(start, tonumber(s[2]) + tonumber(s[3]) / tonumber(s[4]))
  end
  start = start + tonumber(s[1])
  redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  redis.call('HSET', KEYS[1], 'tat', fmt(start), 'tatk', fmt(start))
end
local cap = tonumber(ARGV[3])
if cap then
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tat'))
  redis.call('HSET', KEYS[1], 'tat', fmt(math.min(tat, cap)))
end
return 1
"""
)

#: KEYS: leases procs. ARGV: lease_s proc alive_s lease ... Extends live leases, beats.
RENEW = (
    _PRELUDE
    + """
local now = clock()
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV do
  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if cur and tonumber(cur) < now + ttl then redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
end
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
return fmt(now)
"""
)


@dataclass(frozen=True)
class SharedKeys:
    """The Redis keys of one shared controller and the channel its freed slots are told on."""

    state: str
    leases: str
    sends: str
    answers: str
    refused: str
    procs: str
    want: str
    gate: str
    channel: str


def keys_for(key: str, *, endpoint_key: str) -> SharedKeys:
    """The keys under ``key`` (one controller) and ``endpoint_key`` (its provider endpoint)."""
    return SharedKeys(
        state=f"{key}:state",
        leases=f"{key}:leases",
        sends=f"{key}:sends",
        answers=f"{key}:answers",
        refused=f"{key}:refused",
        procs=f"{key}:procs",
        want=f"{key}:want",
        gate=f"{endpoint_key}:gate",
        channel=f"{key}:freed",
    )
