"""The Lua of ``redis_floor``'s prototypes (issue 17): each design's fast reserve and commit, their
general path, and a batch script over the fast ones; built from a few parts so that a variant differs
from ``lean`` in one place only.

Data models (``P`` is a namespace's prefix; every key shares its hash tag):

* ``compat``: today's, unchanged (``_redis_wire``: the record key ``P r:<id>``, the counter hash's
  ``spent``, ``held`` and ``r:<id>`` = amount, the leases sorted set, the limits hash, the journal
  stream with today's six fields). Only the fast path is new; everything else (a repeat, a refusal,
  an expired lease, a new counter, a raise, rolling counters, shadow) is today's scripts, unchanged.
* ``lean``: no leases set: the counter hash keeps ``m``, a lower bound of its holds' lease ends, and
  each hold as ``r:<id>`` = ``'<amount> <lease end>'``; a limit override mirrored into the counter as
  ``o``; the record key kept (``h``/``c``/``x`` texts); the journal entry one field ``e``.
* ``lean-trim``: ``lean`` trusting the client's digits (no ``%D`` pattern), its commit reading no
  ``TIME`` (the journal entry's time is its stream id's; a hold not reclaimed yet commits as in time).
  Other variants change one part each (``VARIANTS``).
* ``fold``: ``lean`` without the record key: the record is ``r:<id>`` of the reservation's first
  counter (``'<amount> <lease end> h'`` while held, then its resolution).
* ``min``: no record, no lease, no override, no idempotency: the floor of any two-script design.
"""

from __future__ import annotations

NEVER = 4503599627370496
"""``m`` of a counter without holds (2^52: past any lease end, exact in a Lua number)."""

CLOCK = """
local function clock()
  local t = redis.call('TIME')
  local us = t[2] + 0
  return t[1] * 1000 + (us - us % 1000) / 1000
end
"""

# -- lean and its variants ------------------------------------------------------------------------

_LEAN_RESERVE = """
-- K: [record, (limits,) counters...]  A: [id, lease, lo, hi, keep, tail, per hold: @HOLDARGS]
local function reserve(K, A, now)
  local n = #K - @C1
  if n < 1 or #A ~= 6 + @P * n then return {'G'} end
  now = now or clock()
  if now < A[3] + 0 or now >= A[4] + 0 then return {'W', now} end
  local ends = now + A[2]
  local amounts, after, lower = {}, {}, {}
  for i = 1, n do
    local j = 6 + @P * (i - 1)
    @HOLD
    @VALID
    @READ
    local s, h, m = c[1], c[2], c[3]
    if not m or m + 0 <= now or #s > 15 or #h > 15 then return {'G'} end
    if o then limit = o end
    local nh = h + amount
    if s + nh > limit + 0 then return {'G'} end
    amounts[i], after[i], lower[i] = amount, string.format('%d', nh), ends < m + 0
  end
  @RECORD
  local f, e = 'r:' .. A[1], ' ' .. ends
  for i = 1, n do
    if lower[i] then redis.call('HSET', K[@C1 + i], 'held', after[i], f, amounts[i] .. e@HOME, 'm', ends)
    else redis.call('HSET', K[@C1 + i], 'held', after[i], f, amounts[i] .. e@HOME) end
  end
  return {now, ends}
end
"""

_LEAN_COMMIT = """
-- K: [record, journal, counters...]  A: [id, keep, maxlen, ends, ctail, @ENTRYARGS, per counter:
--    charge, amount, hold text]
local function commit(K, A, now)
  local n = #K - 2
  if n < 1 or #A ~= @H + 3 * n then return {'G'} end
  local f = 'r:' .. A[1]
  local rows = {}
  for i = 1, n do
    local j = @H + 3 * (i - 1)
    local c = redis.call('HMGET', K[2 + i], 'spent', 'held', f)
    local charge = A[j + 1]
    if c[3] ~= A[j + 3] or #c[1] > 15 or #c[2] > 15 or #charge > 15@CVALID then
      return {'G'}
    end
    rows[i] = c
  end
  @CNOW
  local spent = {}
  for i = 1, n do
    local j = @H + 3 * (i - 1)
    local c = rows[i]
    @SETTLE
  end
  local sp = n == 1 and spent[1] or table.concat(spent, ',')
  @CRECORD
  @JOURNAL
  return spent
end
"""

_PARTS = {
    "HOLDARGS": "amount, limit",
    "P": "2",
    "C1": "1",
    "HOLD": "local amount, limit = A[j + 1], A[j + 2]",
    "READ": "local c = redis.call('HMGET', K[1 + i], 'spent', 'held', 'm', 'o'); local o = c[4]",
    "RECORD": "if not redis.call('SET', K[1], 'h ' .. now .. ' ' .. ends .. '\\n' .. A[6], 'NX', 'PX',"
    " A[2] + A[5]) then return {'G'} end",
    "HOME": "",
    "VALID": "if #amount > 15 or string.find(amount, '%D') or string.find(limit, '%D') then return {'G'} end",
    "CVALID": " or string.find(charge, '%D')",
    "CNOW": "now = now or clock()\n"
    "  if now >= A[4] + 0 then return {'G'} end  -- the lease ended: the general path says expired",
    "H": "6",
    "ENTRYARGS": "entry",
    "SETTLE": "local s = string.format('%d', c[1] + A[j + 1])\n"
    "    redis.call('HSET', K[2 + i], 'spent', s, 'held', string.format('%d', c[2] - A[j + 2]))\n"
    "    redis.call('HDEL', K[2 + i], f)\n    spent[i] = s",
    "CRECORD": "redis.call('SET', K[1], 'c ' .. sp .. ' 0 ' .. A[5], 'PX', A[2])",
    "JOURNAL": "redis.call('XADD', K[2], 'MAXLEN', '~', A[3], '*', 'e', 'c ' .. now .. ' ' .. A[6])",
}

VARIANTS: dict[str, dict[str, str]] = {
    "lean": {},
    "lean-packed": {  # a hold's amount and limit as one argument, split by a pattern
        "HOLDARGS": "'amount,limit'",
        "P": "1",
        "HOLD": "local amount, limit = string.match(A[j + 1], '^(%d+),(%d+)$')\n"
        "    if not amount then return {'G'} end",
    },
    "lean-limits": {  # the override read from the limits hash (as today), not mirrored in the counter
        "HOLDARGS": "amount, limit, limit field",
        "P": "3",
        "C1": "2",
        "READ": "local c = redis.call('HMGET', K[2 + i], 'spent', 'held', 'm')\n"
        "    local o = redis.call('HGET', K[2], A[j + 3])",
    },
    "lean-incr": {  # the commit's counter writes by HINCRBY (exact int64 in Redis, no formatting)
        "SETTLE": "local s = redis.call('HINCRBY', K[2 + i], 'spent', A[j + 1])\n"
        "    redis.call('HINCRBY', K[2 + i], 'held', '-' .. A[j + 2])\n"
        "    redis.call('HDEL', K[2 + i], f)\n    spent[i] = s",
    },
    "lean-xadd6": {  # the journal entry as today's six fields
        "H": "9",
        "ENTRYARGS": "id, scopes, amounts, data",
        "JOURNAL": "redis.call('XADD', K[2], 'MAXLEN', '~', A[3], '*', 'ts', now, 'event', 'c', 'id', A[6],"
        " 'scopes', A[7], 'amounts', A[8], 'data', A[9])",
    },
    "lean-rpush": {  # the journal a list (no trim)
        "JOURNAL": "redis.call('RPUSH', K[2], 'c ' .. now .. ' ' .. A[6])",
    },
    "fold": {  # no record key: the record is r:<id> of the first counter
        "RECORD": "",
        "HOME": " .. (i == 1 and ' h' or '')",
        "READ": "local c\n"
        "    if i == 1 then\n"
        "      c = redis.call('HMGET', K[2], 'spent', 'held', 'm', 'o', 'r:' .. A[1])\n"
        "      if c[5] then return {'G'} end\n"
        "    else c = redis.call('HMGET', K[1 + i], 'spent', 'held', 'm', 'o') end\n"
        "    local o = c[4]",
        "SETTLE": "spent[i] = string.format('%d', c[1] + A[j + 1])",
        "CRECORD": "for i = 2, n do\n"
        "    local j, key = @H + 3 * (i - 1), K[2 + i]\n"
        "    redis.call('HSET', key, 'spent', spent[i], 'held', string.format('%d', rows[i][2] - A[j + 2]))\n"
        "    redis.call('HDEL', key, f)\n"
        "  end\n"
        "  redis.call('HSET', K[3], 'spent', spent[1], 'held', string.format('%d', rows[1][2] - A[@H + 2]),"
        " f, 'c ' .. now .. ' ' .. sp .. ' 0 ' .. A[5])",
    },
}
VARIANTS["lean-trim"] = {  # the client's digits trusted; no TIME at a commit (ts: the entry's id)
    "VALID": "if #amount > 15 then return {'G'} end",
    "CVALID": "",
    "CNOW": "",
    "JOURNAL": "redis.call('XADD', K[2], 'MAXLEN', '~', A[3], '*', 'e', 'c - ' .. A[6])",
}
VARIANTS["lean-fcall"] = {}
VARIANTS["lean-trim-fcall"] = VARIANTS["lean-trim"]
VARIANTS["fold-fcall"] = VARIANTS["fold"]


def _fill(text: str, parts: dict[str, str]) -> str:
    for _ in range(2):  # (a part may name another)
        for name in sorted(parts, key=len, reverse=True):
            text = text.replace("@" + name, parts[name])
    return text


def lean_ops(variant: str) -> tuple[str, str]:
    """The ``reserve`` and ``commit`` functions of a ``lean``-family design."""
    parts = {**_PARTS, **VARIANTS[variant]}
    return _fill(_LEAN_RESERVE, parts), _fill(_LEAN_COMMIT, parts)


# -- lean's and fold's general path (prototype: numbers as Lua numbers, below 10^15) ----------------

GENERAL_RESERVE = (
    CLOCK
    + """
-- K: [record, limits, journal, counters...]  A: [id, lease, lo, hi, keep, tail, per hold: amount,
--    limit, limit field, expire_at ('' never)]. FOLD: the record is r:<id> of the first counter.
local FOLD, LIST = ARGV[#ARGV] == 'fold', ARGV[#ARGV] == 'list'  -- (list: the journal a list)
local function append(key, e)
  if LIST then redis.call('RPUSH', key, e) else redis.call('XADD', key, '*', 'e', e) end
end
local n = #KEYS - 3
local now = clock()
local id = ARGV[1]
if now < ARGV[3] + 0 or now >= ARGV[4] + 0 then return {'W', now} end
local f = 'r:' .. id
local rec
if FOLD then rec = redis.call('HGET', KEYS[4], f) else rec = redis.call('GET', KEYS[1]) end
if rec then return {'R', rec} end  -- a repeat
local ends = now + ARGV[2]
local rows = {}
for i = 1, n do
  local j = 6 + 4 * (i - 1)
  local key, amount, limit, field, expire_at = KEYS[3 + i], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]
  if string.find(amount, '%D') or string.find(limit, '%D') then return redis.error_reply('BGINVALID hold') end
  local c = redis.call('HMGET', key, 'spent', 'held', 'm', 'o')
  if not c[1] then  -- a new counter: its expiry, and its field's override mirrored
    local o = redis.call('HGET', KEYS[2], field)
    if o then redis.call('HSET', key, 'spent', '0', 'held', '0', 'm', @NEVER, 'o', o)
    else redis.call('HSET', key, 'spent', '0', 'held', '0', 'm', @NEVER) end
    if expire_at ~= '' then redis.call('PEXPIREAT', key, expire_at) end
    c = {'0', '0', '@NEVER', o}
  elseif not c[3] or c[3] + 0 <= now then  -- reclaim the holds whose lease ended; m again
    local all = redis.call('HGETALL', key)
    local held, m = c[2] + 0, @NEVER
    for x = 1, #all, 2 do
      local name, v = all[x], all[x + 1]
      if string.sub(name, 1, 2) == 'r:' then
        local amt, e, home = string.match(v, '^(%d+) (%d+)( ?h?)$')
        if amt then
          if e + 0 <= now then
            held = held - amt
            if home == ' h' then redis.call('HSET', key, name, 'e ' .. v)
            else redis.call('HDEL', key, name) end
            append(KEYS[3], 'e ' .. now .. ' ' .. string.sub(name, 3) .. ' ' .. amt)
          elseif e + 0 < m then m = e + 0 end
        end
      end
    end
    c[2], c[3] = string.format('%d', held), string.format('%d', m)
    redis.call('HSET', key, 'held', c[2], 'm', c[3])
  end
  rows[i] = {key, amount, c[4] or limit, c}
end
for i = 1, n do  -- all or nothing
  local key, amount, limit, c = unpack(rows[i])
  if c[1] + c[2] + amount > limit + 0 then
    local x = 'x ' .. (i - 1) .. ' ' .. limit .. ' ' .. c[1] .. ' ' .. c[2] .. ' ' .. amount
    if FOLD then redis.call('HSET', KEYS[4], f, x) else redis.call('SET', KEYS[1], x, 'PX', ARGV[5]) end
    append(KEYS[3], 'x ' .. now .. ' ' .. id .. ' ' .. amount)
    return {'X', i - 1, limit, c[1], c[2], amount}
  end
end
if not FOLD then
  redis.call('SET', KEYS[1], 'h ' .. now .. ' ' .. ends .. '\\n' .. ARGV[6], 'PX', ARGV[2] + ARGV[5])
end
for i = 1, n do
  local key, amount, limit, c = unpack(rows[i])
  local v = amount .. ' ' .. ends .. ((FOLD and i == 1) and ' h' or '')
  redis.call('HSET', key, 'held', string.format('%d', c[2] + amount), f, v)
  if ends < c[3] + 0 then redis.call('HSET', key, 'm', ends) end
end
return {now, ends}
"""
).replace("@NEVER", str(NEVER))

GENERAL_COMMIT = (
    CLOCK
    + """
-- K: [record, journal, counters...]  A: [id, keep, ctail, entry, per counter: charge, amount,
--    expire_at]. Charges every counter; releases the holds still there (expired: none left).
local FOLD, LIST = ARGV[#ARGV] == 'fold', ARGV[#ARGV] == 'list'  -- (list: the journal a list)
local function append(key, e)
  if LIST then redis.call('RPUSH', key, e) else redis.call('XADD', key, '*', 'e', e) end
end
local n = #KEYS - 2
local id, now = ARGV[1], clock()
local f = 'r:' .. id
local rec
if FOLD then rec = redis.call('HGET', KEYS[3], f) else rec = redis.call('GET', KEYS[1]) end
if not rec then return {'U'} end
local code = string.sub(rec, 1, 1)
if code == 'x' then return {'X'} end
if code == 'c' then return {'D', rec} end
local expired, spent, rows = '0', {}, {}
for i = 1, n do
  local j = 4 + 3 * (i - 1)
  local charge = ARGV[j + 1]
  if string.find(charge, '%D') then return redis.error_reply('BGINVALID charge') end
  rows[i] = redis.call('HMGET', KEYS[2 + i], 'spent', 'held', f)
end
for i = 1, n do
  local j = 4 + 3 * (i - 1)
  local key, c = KEYS[2 + i], rows[i]
  local held, amt, e = c[2] or '0', nil, nil
  if c[3] then amt, e = string.match(c[3], '^(%d+) (%d+)') end
  if amt then  -- still held (a lease that ended and was not reclaimed yet: expired all the same)
    held = string.format('%d', held - amt)
    if e + 0 <= now then expired = '1' append(KEYS[2], 'e ' .. now .. ' ' .. id .. ' ' .. amt) end
  else expired = '1' end
  spent[i] = string.format('%d', (c[1] or 0) + ARGV[j + 1])
  redis.call('HSET', key, 'spent', spent[i], 'held', held)
  if not (FOLD and i == 1) then redis.call('HDEL', key, f) end
  if not c[1] and ARGV[j + 3] ~= '' then redis.call('PEXPIREAT', key, ARGV[j + 3]) end
end
local sp = table.concat(spent, ',')
if FOLD then redis.call('HSET', KEYS[3], f, 'c ' .. now .. ' ' .. sp .. ' ' .. expired .. ' ' .. ARGV[3])
else redis.call('SET', KEYS[1], 'c ' .. sp .. ' ' .. expired .. ' ' .. ARGV[3], 'PX', ARGV[2]) end
append(KEYS[2], 'c ' .. now .. ' ' .. ARGV[4])
spent[#spent + 1] = expired
return spent
"""
)

# -- compat: today's data model, a leaner fast path; the general path is today's scripts ----------

COMPAT_RESERVE = """
-- K: [record, limits, (counter, leases) per hold]  A: [id, lease, lo, hi, keep, meta, held_json,
--    per hold: amount, limit, limit field, expire_at]
local function reserve(K, A, now)
  local n = (#K - 2) / 2
  if n < 1 or #A ~= 7 + 4 * n then return {'G'} end
  now = now or clock()
  if now < A[3] + 0 or now >= A[4] + 0 then return {'W', now} end
  local fields = {}
  for i = 1, n do fields[2 * i - 1], fields[2 * i] = A[6 + 4 * i], A[6 + 4 * i] .. '~until' end
  local o = redis.call('HMGET', K[2], unpack(fields))
  local after, lims, fresh = {}, {}, {}
  for i = 1, n do
    local j = 7 + 4 * (i - 1)
    local amount, limit = A[j + 1], A[j + 2]
    if #amount > 15 or string.find(amount, '%D') or string.find(limit, '%D') or o[2 * i] then return {'G'} end
    if o[2 * i - 1] then limit = o[2 * i - 1] end
    if redis.call('ZRANGEBYSCORE', K[2 + 2 * i], '-inf', now, 'LIMIT', 0, 1)[1] then return {'G'} end
    local c = redis.call('HMGET', K[1 + 2 * i], 'spent', 'held')
    if not c[1] and not c[2] then return {'G'} end  -- a new counter: today's script sets its expiry
    local s, h = c[1] or '0', c[2] or '0'  -- (spent is written by the first charge)
    if #s > 15 or #h > 15 then return {'G'} end
    local nh = h + amount
    if s + nh > limit + 0 then return {'G'} end
    after[i], lims[i], fresh[i] = string.format('%d', nh), limit, h == '0'
  end
  local ends = now + A[2]
  local lims_csv = n == 1 and lims[1] or table.concat(lims, ',')
  local amts = {}
  for i = 1, n do amts[i] = A[4 + 4 * i] end
  if not redis.call('SET', K[1], 'h ' .. now .. ' ' .. ends .. ' ' .. lims_csv .. ' '
    .. table.concat(amts, ',') .. '\\n' .. A[6] .. '\\n' .. A[7], 'NX', 'PX', A[2] + A[5]) then
    return {'G'}
  end
  local f = 'r:' .. A[1]
  for i = 1, n do
    local j = 7 + 4 * (i - 1)
    redis.call('HSET', K[1 + 2 * i], 'held', after[i], f, A[j + 1])
    redis.call('ZADD', K[2 + 2 * i], ends, A[1])
    if A[j + 4] ~= '' and fresh[i] then redis.call('PEXPIREAT', K[2 + 2 * i], A[j + 4]) end
  end
  return {now, ends, lims_csv}
end
"""

COMPAT_COMMIT = """
-- K: [record, journal, (counter, leases) per counter]  A: [id, keep, maxlen, ends, rtail, ctail,
--    scopes, amounts, data, per counter: charge, amount]
local function commit(K, A, now)
  local n = (#K - 2) / 2
  if n < 1 or #A ~= 9 + 2 * n then return {'G'} end
  local f = 'r:' .. A[1]
  local rows = {}
  for i = 1, n do
    local c = redis.call('HMGET', K[1 + 2 * i], 'spent', 'held', f)
    local charge = A[8 + 2 * i]
    -- (no spent yet: the first charge sets the counter's expiry again, in today's script)
    if c[3] ~= A[9 + 2 * i] or not c[1] or #c[1] > 15 or #c[2] > 15 or #charge > 15
      or string.find(charge, '%D') then
      return {'G'}
    end
    rows[i] = c
  end
  now = now or clock()
  if now >= A[4] + 0 then return {'G'} end  -- the lease ended: today's script reclaims, says expired
  local spent = {}
  for i = 1, n do
    local c, key = rows[i], K[1 + 2 * i]
    spent[i] = string.format('%d', c[1] + A[8 + 2 * i])
    redis.call('HSET', key, 'held', string.format('%d', c[2] - A[9 + 2 * i]), 'spent', spent[i])
    redis.call('HDEL', key, f)
    redis.call('ZREM', K[2 + 2 * i], A[1])
  end
  redis.call('SET', K[1], 'c ' .. A[5] .. '0 ' .. table.concat(spent, ',') .. A[6], 'PX', A[2])
  redis.call('XADD', K[2], 'MAXLEN', '~', A[3], '*', 'ts', now, 'event', 'c', 'id', A[1], 'scopes', A[7],
    'amounts', A[8], 'data', A[9])
  return spent
end
"""

# -- min: the floor of any design of two script calls ----------------------------------------------

MIN_RESERVE = """
-- K: [counter]  A: [amount, limit]
local function reserve(K, A, now)
  now = now or clock()
  local c = redis.call('HMGET', K[1], 'spent', 'held')
  if (c[1] or 0) + (c[2] or 0) + A[1] > A[2] + 0 then return {'G'} end
  redis.call('HINCRBY', K[1], 'held', A[1])
  return {now}
end
"""

MIN_COMMIT = """
-- K: [journal, counter]  A: [charge, amount, entry]
local function commit(K, A, now)
  now = now or clock()
  local s = redis.call('HINCRBY', K[2], 'spent', A[1])
  redis.call('HINCRBY', K[2], 'held', '-' .. A[2])
  redis.call('XADD', K[1], '*', 'e', 'c ' .. now .. ' ' .. A[3])
  return {s}
end
"""

BATCH = """
-- ARGV: per operation '<op> <nkeys> <nargs>' (op: r or c), then its arguments; KEYS in order
local OPS = {r = reserve, c = commit}
local now = clock()
local out, shapes = {}, {}
local k, a = 0, 1
while a <= #ARGV do
  local shape = shapes[ARGV[a]]
  if not shape then
    local op, nk, na = string.match(ARGV[a], '^(%l) (%d+) (%d+)$')
    shape = {OPS[op], nk + 0, na + 0}
    shapes[ARGV[a]] = shape
  end
  local nk, na = shape[2], shape[3]
  local ok, reply = pcall(shape[1], {unpack(KEYS, k + 1, k + nk)}, {unpack(ARGV, a + 1, a + na)}, now)
  if not ok then reply = redis.error_reply('ERR ' .. tostring(reply)) end
  out[#out + 1] = reply
  k, a = k + nk, a + 1 + na
end
return out
"""


def scripts(reserve: str, commit: str) -> dict[str, str]:
    """The single-call scripts (each with only its own function) and the batch script of a design
    whose ``reserve`` and ``commit`` functions are these."""
    return {
        "reserve": CLOCK + reserve + "\nreturn reserve(KEYS, ARGV, nil)\n",
        "commit": CLOCK + commit + "\nreturn commit(KEYS, ARGV, nil)\n",
        "batch": CLOCK + reserve + commit + BATCH,
    }


def functions(reserve: str, commit: str, library: str) -> str:
    """The same functions as a Redis Functions library (``FUNCTION LOAD``): made once, at load."""
    return (
        f"#!lua name={library}\n{CLOCK}{reserve}{commit}\n"
        f"redis.register_function('{library}_reserve', function(K, A) return reserve(K, A, nil) end)\n"
        f"redis.register_function('{library}_commit', function(K, A) return commit(K, A, nil) end)\n"
    )
