-- set_limits: set (value) or clear ('') several counters' run-time limits at once, ending their
-- temporary raises (_raise.lua); one journal entry.
-- KEYS: limits, journal. ARGV: journal_maxlen, id, scopes_json, data_json, then (limit_field, value|'')
-- per counter.
local n = (#ARGV - 4) / 2
if #KEYS ~= 2 or n < 1 or n ~= math.floor(n) then return fail('arity') end
if not is_int64(ARGV[1]) or string.find(ARGV[4], '\n', 1, true) then return fail('meta') end
for i = 1, n do
  local value = ARGV[4 + 2 * i]
  if value ~= '' and not is_int64(value) then return fail('amount') end
end
for i = 1, n do
  local field, value = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if value == '' then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, value) end
  redis.call('HDEL', KEYS[1], field .. '~until', field .. '~base')
end
xadd(KEYS[2], ARGV[1], string.format('%d', now_ms()), 'limits_set', ARGV[2], ARGV[3], '{}', ARGV[4])
return 'OK'
