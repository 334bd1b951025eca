-- get_limit: a counter's run-time limit (nil: none), a temporary raise that ended restored first.
-- KEYS: limits. ARGV: limit_field.
if #KEYS ~= 1 or #ARGV ~= 1 then return fail('arity') end
return live_limit(KEYS[1], ARGV[1], redis.call('HGET', KEYS[1], ARGV[1]), now_ms())
