-- Shared helpers, prepended to every budgetguard script (after _time.lua).
-- Money and counts are int64 decimal strings. Lua numbers are doubles (exact only below 2^53): values
-- of at most 15 characters (below 10^15) are added and compared as numbers, where every sum of a few
-- stays exact; longer ones split into two base-1e9 limbs (plus, minus, at_most below). The constants
-- are written as literals: a local captured by a function costs every script call an upvalue.
--   1000000000: a limb's base; 9223372036, 854775807: 2^63 - 1 as limbs; 15: the longest number path

local function fail(msg) return redis.error_reply('BGINVALID ' .. msg) end

-- (s + 0, not tonumber(s): the string is digits already, and tonumber converts it twice)
local function limbs(s)
  local n = #s
  if n <= 9 then return 0, s + 0 end
  return string.sub(s, 1, n - 9) + 0, string.sub(s, n - 8) + 0
end

-- Group commit (batch.lua sets it): the strings is_int64 accepted in this batch, {[s] = true} (its
-- operations pass the same lease, retention and journal length). nil outside a batch.
local int64s

-- is_int64 of a string a pattern matched as digits only ('%d+'): the length, zero and range checks
-- (19 digits: its first 10 and last 9 against 2^63 - 1's)
local function digits64(s)
  local n = #s
  if n < 19 then return n == 1 or string.byte(s, 1) ~= 48 end
  if n > 19 then return false end
  local h = string.sub(s, 1, 10) + 0
  return h < 9223372036 or (h == 9223372036 and string.sub(s, 11) + 0 <= 854775807)
end

local function is_int64(s)
  if int64s and int64s[s] then return true end
  if type(s) ~= 'string' then return false end
  -- digits only, no leading zeros, at most 2^63 - 1
  if s ~= '0' and (string.find(s, '^[1-9]%d*$') == nil or not digits64(s)) then return false end
  if int64s then int64s[s] = true end
  return true
end

-- a sum of two int64 given as limbs, as a decimal string (exact past 2^53)
local function decimal(h, l)
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, l)
end

local function add(ah, al, bh, bl)
  local h, l = ah + bh, al + bl
  if l >= 1000000000 then return h + 1, l - 1000000000 end
  return h, l
end

-- a - b of two int64 given as limbs, for a >= b
local function sub(ah, al, bh, bl)
  local h, l = ah - bh, al - bl
  if l < 0 then return h - 1, l + 1000000000 end
  return h, l
end

local function le(ah, al, bh, bl) return ah < bh or (ah == bh and al <= bl) end
local function fits(h, l) return le(h, l, 9223372036, 854775807) end
local function num(s) if not s then return 0, 0 end return limbs(s) end

-- a + b of two int64 decimal strings, as one; nil past int64
local function plus(a, b)
  if #a <= 15 and #b <= 15 then return string.format('%d', a + b) end
  local ah, al = limbs(a)
  local h, l = add(ah, al, limbs(b))
  if not fits(h, l) then return nil end
  return decimal(h, l)
end

-- a - b of two int64 decimal strings, as one; nil when b > a
local function minus(a, b)
  if #a <= 15 and #b <= 15 then
    local d = a - b
    if d < 0 then return nil end
    return string.format('%d', d)
  end
  local ah, al = limbs(a)
  local bh, bl = limbs(b)
  if not le(bh, bl, ah, al) then return nil end
  return decimal(sub(ah, al, bh, bl))
end

-- a <= b of two int64 decimal strings
local function at_most(a, b)
  if #a <= 15 and #b <= 15 then return a + 0 <= b + 0 end
  local ah, al = limbs(a)
  local bh, bl = limbs(b)
  return le(ah, al, bh, bl)
end

local function now_ms()
  local t = redis.call('TIME')
  local us = t[2] + 0
  return t[1] * 1000 + (us - us % 1000) / 1000
end

-- Group commit (batch.lua sets it): the leases sets this batch scanned whole, {[leases] = true}: the
-- batch has one now, and every lease it adds ends after it (a lease is at least 1 ms), so a second
-- scan would find nothing. nil outside a batch.
local scanned

-- A journal entry. event: 'c' committed, 'r' released, 'e' expired, 'x' refused (_redis_wire.EVENTS);
-- data: one JSON object (the reservation's meta, the resolution's, its true flags: see merge).
local function xadd(journal, maxlen, now, event, id, scopes, amounts, data)
  redis.call('XADD', journal, 'MAXLEN', '~', maxlen, '*', 'ts', now, 'event', event, 'id', id,
    'scopes', scopes, 'amounts', amounts, 'data', data)
end

-- Two JSON objects' text as one, b's members after a's (a JSON reader keeps the last of a repeated
-- name: b's values win, as a dict update would)
local function merge(a, b)
  if b == '{}' then return a end
  if a == '{}' then return b end
  return string.sub(a, 1, -2) .. ',' .. string.sub(b, 2)
end

-- A reservation's record: one string (a hash with a value over 64 bytes, as the held JSON is, takes
-- the hashtable encoding: ~3x the memory). States and layouts:
--   held      'h <created> <expires> <lims> <amts>\n<meta>\n<holds>'
--   resolved  'c|r <created> <expires> <lims> <overrun><expired> <spent>\n<charged>\n<holds>'
--   refused   'x <idx> <limit> <spent> <held> <requested> <wend>\n\n<holds>'
-- (lims, amts, spent: comma-separated, one per counter; holds: the held JSON, _stored.encode_held;
-- meta, charged: JSON objects, which never hold a raw newline.)
local STATES = {h = 'held', c = 'committed', r = 'released', x = 'refused'}

-- A record written by an earlier version: a hash (read-only here: the next write replaces it)
local function legacy_record(key)
  local r = redis.call('HMGET', key, 'state', 'created', 'expires', 'lims', 'amts', 'meta', 'held', 'charged',
    'overrun', 'expired', 'spent', 'idx', 'limit', 'requested', 'wend', 'holds')
  if not r[1] then return nil end
  if r[1] == 'refused' then
    return {state = 'refused', idx = r[12], limit = r[13], spent = r[11], held = r[7], requested = r[14],
      wend = r[15], holds = r[16]}
  end
  return {state = r[1], created = r[2], expires = r[3], lims = r[4], amts = r[5], meta = r[6] or '{}',
    holds = r[7], charged = r[8], overrun = r[9], expired = r[10], spent = r[11] or ''}
end

local function get_record(key)
  local s = redis.pcall('GET', key)
  if not s then return nil end
  if type(s) == 'table' then return legacy_record(key) end  -- WRONGTYPE: a hash
  local code = string.sub(s, 1, 1)
  if code == 'h' then
    local a, b, c, d, e, f = string.match(s, '^h (%d+) (%d+) ([%d,]+) ([%d,]+)\n([^\n]*)\n(.*)$')
    return {state = 'held', created = a, expires = b, lims = c, amts = d, meta = e, holds = f}
  elseif code == 'x' then
    local a, b, c, d, e, f, g = string.match(s, '^x (%d+) (%d+) (%d+) (%d+) (%d+) (%d*)\n\n(.*)$')
    return {state = 'refused', idx = a, limit = b, spent = c, held = d, requested = e, wend = f, holds = g}
  end
  local a, b, c, d, e, f, g = string.match(s, '^%l (%d+) (%d+) ([%d,]+) (%d%d) ([%d,]*)\n([^\n]*)\n(.*)$')
  return {state = STATES[code], created = a, expires = b, lims = c, overrun = string.sub(d, 1, 1),
    expired = string.sub(d, 2, 2), spent = e, charged = f, holds = g}
end

local function put_record(key, text, now, expire_at)
  -- PX, not PXAT (Redis 6.2+): the record lives from now to expire_at, on any Redis since 2.6.12
  redis.call('SET', key, text, 'PX', string.format('%d', math.max(1, expire_at - now)))
end

-- Reclaim the holds of expired leases on one counter (bounded work per call; once a batch, above).
local function reclaim(counter, leases, now, label_json, unit, journal, maxlen)
  if scanned and scanned[leases] then return end
  local ids = expired_leases(leases, now)
  for _, id in ipairs(ids) do
    local amt = redis.call('HGET', counter, 'r:' .. id)
    if amt then
      if amt ~= '0' then redis.call('HINCRBY', counter, 'held', '-' .. amt) end
      redis.call('HDEL', counter, 'r:' .. id)
      xadd(journal, maxlen, now, 'e', id, label_json, '{"' .. unit .. '":' .. amt .. '}', '{}')
    end
    redis.call('ZREM', leases, id)
  end
  if scanned and #ids < 1000 then scanned[leases] = true end  -- (after its writes: none failed)
end

-- The fast paths' check of a call's settings (lease, retention, journal length...): each a number of 1
-- to 15 digits, no leading zero, not 0 (one pattern over them all: is_int64 three times costs ~3x);
-- false sends the call to the general path, which checks them one by one and says which is wrong.
local function settings_ok(a, b, c)
  return #a <= 15 and #b <= 15 and #c <= 15
    and string.find(a .. ' ' .. b .. ' ' .. c, '^[1-9]%d* [1-9]%d* [1-9]%d*$') ~= nil
end

local function check_common(maxlen, retention)
  if not is_int64(maxlen) or not is_int64(retention) then return false end
  return true
end
