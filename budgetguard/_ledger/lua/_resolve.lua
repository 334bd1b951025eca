-- Shared body of commit and release (prepended after _lib.lua; the commit and release scripts run its
-- body as their own code with their mode bound, _redis_wire._ALONE; batch.lua calls it with the time it
-- read once: now, ms).
-- KEYS: record, journal, then (counter, leases) per held counter, in reservation order.
-- ARGV: id, retention_ms, journal_maxlen, meta_json, scopes_json, amounts_json,
--       then one per counter, packed: 'charge,expire_at,unit,label_json' (charge '' on release;
--       expire_at: the counter's window end + retention, '' for a counter that never resets).
-- Keys written: the record (expires with the reservation, below); a counter only when it exists
-- already (its expiry set by reserve), except a commit's charge: a late commit may find its
-- counter expired, so the first charge of a counter sets its expiry again (never a key without one).
local function resolve(mode, KEYS, ARGV, now)
  local id, retention, maxlen, meta, scopes, amounts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local H = 6
  local n = #ARGV - H
  if n < 1 or #KEYS ~= 2 + 2 * n then return fail('arity') end
  if not check_common(maxlen, retention) then return fail('retention') end
  local counters = {}
  for i = 1, n do
    local c = {string.match(ARGV[H + i], '^(%d*),(%d*),(%l+),(%[.*%])$')}  -- charge, expire_at, unit, label
    if #c ~= 4 then return fail('counter') end
    if mode == 'committed' then
      if c[1] == '' or not digits64(c[1]) then return fail('amount') end
    elseif c[1] ~= '' then return fail('amount') end
    if c[2] ~= '' and not digits64(c[2]) then return fail('expiry') end
    counters[i] = c
  end
  if string.find(meta, '\n', 1, true) then return fail('meta') end
  local r = get_record(KEYS[1])
  if not r then return {'UNKNOWN'} end
  local state = r.state
  if state == 'refused' then return {'REFUSED'} end
  if state ~= 'held' then  -- a repeat: the first outcome, with the spent totals it left
    local reply = {'DUP', state, r.charged, r.overrun, r.expired}
    for v in string.gmatch(r.spent, '%d+') do reply[#reply + 1] = v end
    return reply
  end
  local held_amts = {}  -- (one counter's, without the gmatch iterator: the usual case)
  if n == 1 and not string.find(r.amts, ',', 1, true) then held_amts[1] = r.amts
  else for a in string.gmatch(r.amts, '%d+') do held_amts[#held_amts + 1] = a end end
  if #held_amts ~= n then return fail('counters') end
  now = now or now_ms()
  local now_s = string.format('%d', now)
  local expired, overrun = '0', '0'
  local after, rows = {}, {}
  for i = 1, n do  -- reclaim, read, and the overflow check, before this resolution's first write
    local c = counters[i]
    local counter = KEYS[1 + 2 * i]
    reclaim(counter, KEYS[2 + 2 * i], now_s, c[4], c[3], KEYS[2], maxlen)
    local v = redis.call('HMGET', counter, 'spent', 'held', 'r:' .. id)
    rows[i] = v
    if mode == 'committed' then
      after[i] = plus(v[1] or '0', c[1])  -- spent after this commit (reclaiming never changes spent)
      if not after[i] then return fail('overflow') end
    end
  end
  for i = 1, n do
    local c, v = counters[i], rows[i]
    local counter, leases = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
    local amt = v[3]
    local charge = mode == 'committed' and c[1] ~= '0' and c[1]
    -- held less this hold and spent plus the charge, as read above, in one write (the script runs
    -- alone: what HINCRBY would leave)
    local w = {}
    if amt then
      if amt ~= '0' then
        local left = minus(v[2] or '0', amt)
        if left then
          w[#w + 1], w[#w + 2] = 'held', left
        else
          redis.call('HINCRBY', counter, 'held', '-' .. amt)  -- (held below a hold: never written)
        end
      end
      redis.call('HDEL', counter, 'r:' .. id)
      redis.call('ZREM', leases, id)
    else
      expired = '1'
    end
    if charge then
      w[#w + 1], w[#w + 2] = 'spent', after[i]
    end
    if #w > 0 then redis.call('HSET', counter, unpack(w)) end
    if charge and not v[1] and c[2] ~= '' then
      redis.call('PEXPIREAT', counter, c[2])  -- the first charge of a counter that may have expired
    end
    if mode == 'committed' and not at_most(c[1], held_amts[i]) then overrun = '1' end
  end
  local charged = mode == 'committed' and amounts or '{}'
  local code = mode == 'committed' and 'c' or 'r'
  put_record(KEYS[1], code .. ' ' .. r.created .. ' ' .. r.expires .. ' ' .. r.lims .. ' ' .. overrun .. expired ..
    ' ' .. table.concat(after, ',') .. '\n' .. charged .. '\n' .. r.holds,
    now, record_expiry(now, r.expires + 0, retention + 0))
  local data = merge(r.meta, meta)
  if overrun == '1' then data = merge(data, '{"overrun":true}') end
  if expired == '1' then data = merge(data, '{"expired":true}') end
  xadd(KEYS[2], maxlen, now_s, code, id, scopes, amounts, data)
  local reply = {'DONE', mode, charged, overrun, expired}
  for i = 1, #after do reply[#reply + 1] = after[i] end
  return reply
end
