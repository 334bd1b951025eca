-- reserve: admit a reservation on every counter or on none.
-- KEYS: record, limits, journal, then (counter, leases) per hold.
-- ARGV: id, lease_ms, retention_ms, journal_maxlen, meta_json, held_json, enforce ('1'|'0'), n,
--       then per hold: amount, default_limit, limit_field, window_start, window_end|'', expire_at|'',
--       label_json, unit.
local id, lease, retention, maxlen, meta, held_json = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local enforce = ARGV[7] == '1'
local n = tonumber(ARGV[8])
local H = 8  -- header arguments before the per-hold ones
if not n or n < 1 or #KEYS ~= 3 + 2 * n or #ARGV ~= H + 8 * n then return fail('arity') end
if ARGV[7] ~= '1' and ARGV[7] ~= '0' then return fail('enforce') end
if not is_int64(lease) or lease == '0' or not check_common(maxlen, retention) then return fail('lease') end
for i = 1, n do
  local a = H + 8 * (i - 1)
  if not is_int64(ARGV[a + 1]) or not is_int64(ARGV[a + 2]) or not is_int64(ARGV[a + 4]) then
    return fail('amount')
  end
  if ARGV[a + 5] ~= '' and not is_int64(ARGV[a + 5]) then return fail('window') end
  if ARGV[a + 6] ~= '' and not is_int64(ARGV[a + 6]) then return fail('expiry') end
end

local state = redis.call('HGET', KEYS[1], 'state')
if state == 'refused' then
  local r = redis.call('HMGET', KEYS[1], 'idx', 'limit', 'spent', 'held', 'requested', 'wend', 'holds')
  return {'REFUSED', r[1], r[2], r[3], r[4], r[5], r[6], '1', r[7]}
elseif state then
  local r = redis.call('HMGET', KEYS[1], 'created', 'expires', 'lims', 'held')
  return {'OK', r[1], r[2], r[3], '1', r[4]}
end

local now = now_ms()
for i = 1, n do
  local a = H + 8 * (i - 1)
  if now < tonumber(ARGV[a + 4]) or (ARGV[a + 5] ~= '' and now >= tonumber(ARGV[a + 5])) then
    return {'WINDOW', tostring(now)}
  end
end

for i = 1, n do
  local a = H + 8 * (i - 1)
  reclaim(KEYS[2 + 2 * i], KEYS[3 + 2 * i], now, ARGV[a + 7], ARGV[a + 8], KEYS[3], maxlen)
end

local lims = {}
for i = 1, n do
  local a = H + 8 * (i - 1)
  local counter = KEYS[2 + 2 * i]
  local amount = ARGV[a + 1]
  local limit = redis.call('HGET', KEYS[2], ARGV[a + 3]) or ARGV[a + 2]
  local c = redis.call('HMGET', counter, 'spent', 'held')
  local spent, held = c[1] or '0', c[2] or '0'
  local sh, sl = num(spent)
  local hh, hl = num(held)
  local ah, al = limbs(amount)
  local th, tl = add(sh, sl, hh, hl)
  th, tl = add(th, tl, ah, al)
  local lh, ll = limbs(limit)
  if enforce and not le(th, tl, lh, ll) then
    redis.call('HSET', KEYS[1], 'state', 'refused', 'idx', i - 1, 'limit', limit, 'spent', spent,
      'held', held, 'requested', amount, 'wend', ARGV[a + 5], 'holds', held_json)
    redis.call('PEXPIREAT', KEYS[1], now + tonumber(retention))
    xadd(KEYS[3], maxlen, now, 'refused', id, ARGV[a + 7], '{"' .. ARGV[a + 8] .. '":' .. amount .. '}',
      meta, '{}', '{}')
    return {'REFUSED', tostring(i - 1), limit, spent, held, amount, ARGV[a + 5], '0', held_json}
  end
  lims[i] = limit
end

local expires = now + tonumber(lease)
local amts = {}
for i = 1, n do
  local a = H + 8 * (i - 1)
  local counter, leases = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  redis.call('HINCRBY', counter, 'held', ARGV[a + 1])
  redis.call('HSET', counter, 'r:' .. id, ARGV[a + 1])
  redis.call('ZADD', leases, expires, id)
  if ARGV[a + 6] ~= '' then
    redis.call('PEXPIREAT', counter, ARGV[a + 6])
    redis.call('PEXPIREAT', leases, ARGV[a + 6])
  end
  amts[i] = ARGV[a + 1]
end
local lims_csv = table.concat(lims, ',')
redis.call('HSET', KEYS[1], 'state', 'held', 'created', now, 'expires', expires, 'lims', lims_csv,
  'amts', table.concat(amts, ','), 'held', held_json, 'meta', meta, 'n', n)
redis.call('PEXPIREAT', KEYS[1], expires + tonumber(retention))
return {'OK', tostring(now), tostring(expires), lims_csv, '0', held_json}
