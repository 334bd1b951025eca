-- status: reclaim expired holds, then read limit, spent and held of each counter.
-- Writes only keys that exist (a reclaim drops holds from a counter) and the journal.
-- KEYS: limits, journal, then (counter, leases) per counter.
-- ARGV: journal_maxlen, n, then per counter: default_limit, limit_field, window_start, window_end|'',
--       label_json, unit.
local maxlen = ARGV[1]
local n = tonumber(ARGV[2])
if not n or n < 1 or #KEYS ~= 2 + 2 * n or #ARGV ~= 2 + 6 * n then return fail('arity') end
if not is_int64(maxlen) then return fail('maxlen') end
local now = now_ms()
for i = 1, n do
  local a = 2 + 6 * (i - 1)
  if not is_int64(ARGV[a + 1]) or not is_int64(ARGV[a + 3]) then return fail('amount') end
  if not in_window(now, tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])) then  -- (tonumber(''): nil)
    return {'WINDOW', tostring(now)}
  end
end
local out = {'OK'}
for i = 1, n do
  local a = 2 + 6 * (i - 1)
  local counter, leases = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  reclaim(counter, leases, now, ARGV[a + 5], ARGV[a + 6], KEYS[2], maxlen)
  local override = live_limit(KEYS[1], ARGV[a + 2], redis.call('HGET', KEYS[1], ARGV[a + 2]), now)
  local c = redis.call('HMGET', counter, 'spent', 'held')
  out[#out + 1] = override or ARGV[a + 1]
  out[#out + 1] = c[1] or '0'
  out[#out + 1] = c[2] or '0'
  out[#out + 1] = override and '1' or '0'
end
return out
