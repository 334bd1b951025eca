-- Shared helpers, prepended to every budgetguard script (after _time.lua).
-- Money and counts are int64 decimal strings. Lua numbers are doubles (exact only below 2^53), so
-- sums and comparisons split each value into two base-1e9 limbs; Redis's HINCRBY does the stores.
local BASE = 1000000000
local MAX_H, MAX_L = 9223372036, 854775807

local function fail(msg) return redis.error_reply('BGINVALID ' .. msg) end

local function limbs(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end

local function is_int64(s)
  if type(s) ~= 'string' then return false end
  local n = #s
  if n == 0 or n > 19 or string.find(s, '%D') then return false end
  if n > 1 and string.byte(s, 1) == 48 then return false end  -- no leading zeros ('0' is 48)
  if n < 19 then return true end  -- at most 18 digits: below 2^63 - 1
  local h, l = limbs(s)
  return h < MAX_H or (h == MAX_H and l <= MAX_L)
end

-- a sum of two int64 given as limbs, as a decimal string (exact past 2^53)
local function decimal(h, l)
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, l)
end

local function add(ah, al, bh, bl)
  local h, l = ah + bh, al + bl
  if l >= BASE then return h + 1, l - BASE end
  return h, l
end

local function le(ah, al, bh, bl) return ah < bh or (ah == bh and al <= bl) end
local function fits(h, l) return le(h, l, MAX_H, MAX_L) end
local function num(s) if not s then return 0, 0 end return limbs(s) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function xadd(journal, maxlen, now, event, id, scopes, amounts, rdata, data, flags)
  redis.call('XADD', journal, 'MAXLEN', '~', maxlen, '*', 'ts', now, 'event', event, 'id', id,
    'scopes', scopes, 'amounts', amounts, 'rdata', rdata, 'data', data, 'flags', flags)
end

-- Reclaim the holds of expired leases on one counter (bounded work per call).
local function reclaim(counter, leases, now, label_json, unit, journal, maxlen)
  local ids = expired_leases(leases, now)
  for _, id in ipairs(ids) do
    local amt = redis.call('HGET', counter, 'r:' .. id)
    if amt then
      if amt ~= '0' then redis.call('HINCRBY', counter, 'held', '-' .. amt) end
      redis.call('HDEL', counter, 'r:' .. id)
      xadd(journal, maxlen, now, 'expired', id, label_json, '{"' .. unit .. '":' .. amt .. '}', '{}', '{}', '{}')
    end
    redis.call('ZREM', leases, id)
  end
end

local function check_common(maxlen, retention)
  if not is_int64(maxlen) or not is_int64(retention) then return false end
  return true
end
