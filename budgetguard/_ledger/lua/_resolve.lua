-- Shared body of commit and release (prepended after _lib.lua; the script sets MODE first).
-- KEYS: record, journal, then (counter, leases) per held counter, in reservation order.
-- ARGV: id, retention_ms, journal_maxlen, meta_json, scopes_json, amounts_json, n,
--       then per counter: charge ('' on release), label_json, unit.
local function resolve(mode)
  local id, retention, maxlen, meta, scopes, amounts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local n = tonumber(ARGV[7])
  if not n or n < 1 or #KEYS ~= 2 + 2 * n or #ARGV ~= 7 + 3 * n then return fail('arity') end
  if not check_common(maxlen, retention) then return fail('retention') end
  for i = 1, n do
    local charge = ARGV[7 + 3 * (i - 1) + 1]
    if mode == 'committed' and not is_int64(charge) then return fail('amount') end
  end
  local r = redis.call('HMGET', KEYS[1], 'state', 'n', 'amts', 'expires', 'meta', 'charged', 'overrun', 'expired')
  local state = r[1]
  if not state then return {'UNKNOWN'} end
  if state == 'refused' then return {'REFUSED'} end
  if state ~= 'held' then return {'DUP', state, r[6], r[7], r[8]} end
  if tonumber(r[2]) ~= n then return fail('counters') end
  local held_amts = {}
  for a in string.gmatch(r[3], '[^,]+') do held_amts[#held_amts + 1] = a end
  if mode == 'committed' then
    for i = 1, n do  -- overflow check before the first write
      local sh, sl = num(redis.call('HGET', KEYS[1 + 2 * i], 'spent'))
      local ch, cl = limbs(ARGV[7 + 3 * (i - 1) + 1])
      if not fits(add(sh, sl, ch, cl)) then return fail('overflow') end
    end
  end
  local now = now_ms()
  local expired, overrun = '0', '0'
  local after = {}
  for i = 1, n do
    local a = 7 + 3 * (i - 1)
    local counter, leases = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
    reclaim(counter, leases, now, ARGV[a + 2], ARGV[a + 3], KEYS[2], maxlen)
    local amt = redis.call('HGET', counter, 'r:' .. id)
    if amt then
      if amt ~= '0' then redis.call('HINCRBY', counter, 'held', '-' .. amt) end
      redis.call('HDEL', counter, 'r:' .. id)
      redis.call('ZREM', leases, id)
    else
      expired = '1'
    end
    if mode == 'committed' then
      local charge = ARGV[a + 1]
      if charge ~= '0' then redis.call('HINCRBY', counter, 'spent', charge) end
      after[i] = redis.call('HGET', counter, 'spent') or '0'  -- a string: exact past 2^53
      local ch, cl = limbs(charge)
      local hh, hl = limbs(held_amts[i])
      if not le(ch, cl, hh, hl) then overrun = '1' end
    end
  end
  local charged = mode == 'committed' and amounts or '{}'
  redis.call('HSET', KEYS[1], 'state', mode, 'charged', charged, 'overrun', overrun, 'expired', expired)
  redis.call('PEXPIREAT', KEYS[1], math.max(now, tonumber(r[4])) + tonumber(retention))
  local flags = '{"overrun":' .. (overrun == '1' and 'true' or 'false') .. ',"expired":' ..
    (expired == '1' and 'true' or 'false') .. '}'
  xadd(KEYS[2], maxlen, now, mode, id, scopes, amounts, r[5] or '{}', meta, flags)
  local reply = {'DONE', mode, charged, overrun, expired}
  for i = 1, #after do reply[#reply + 1] = after[i] end
  return reply
end
