-- set_limit: store (or, with an empty value, clear) a counter's run-time limit, ending a temporary raise.
-- The limits hash has no expiry on purpose: an operator's limit holds until cleared (one small
-- field per overridden counter; the hash goes when its last field is cleared).
-- KEYS: limits. ARGV: limit_field, value|''.
if #KEYS ~= 1 or #ARGV ~= 2 then return fail('arity') end
if ARGV[2] ~= '' and not is_int64(ARGV[2]) then return fail('amount') end
redis.call('HDEL', KEYS[1], ARGV[1] .. '~until', ARGV[1] .. '~base')  -- (a limit set outright ends a raise)
if ARGV[2] == '' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
