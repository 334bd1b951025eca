-- set_limits: set (value) or clear ('') several counters' run-time limits at once, ending their
-- temporary raises (_raise.lua); one journal entry. Once per id (the call's own): its record answers
-- redis-py's retry after a lost reply (no second journal entry).
-- KEYS: limits, journal, record. ARGV: journal_maxlen, id, scopes_json, data_json, retention_ms, then
-- (limit_field, value|'') per counter.
local n = (#ARGV - 5) / 2
if #KEYS ~= 3 or n < 1 or n ~= math.floor(n) then return fail('arity') end
if not is_int64(ARGV[1]) or string.find(ARGV[4], '\n', 1, true) then return fail('meta') end
if not is_int64(ARGV[5]) then return fail('retention') end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'OK' end
for i = 1, n do
  local value = ARGV[5 + 2 * i]
  if value ~= '' and not is_int64(value) then return fail('amount') end
end
for i = 1, n do
  local field, value = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  if value == '' then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, value) end
  redis.call('HDEL', KEYS[1], field .. '~until', field .. '~base')
end
local now = now_ms()
put_record(KEYS[3], 's', now, record_expiry(now, nil, ARGV[5] + 0))
xadd(KEYS[2], ARGV[1], string.format('%d', now), 'limits_set', ARGV[2], ARGV[3], '{}', ARGV[4])
return 'OK'
