-- adjust: change a counter's spent in its current window (_admin.adjust's steps): '+' adds amount,
-- '-' takes it off (never below 0: a credit past spent takes it to 0), '0' takes spent to 0 (a reset).
-- A rolling counter's window is the trailing one a check counts: the bucket holding now and the
-- earlier ones (their keys follow, newest first). A charge lands in the bucket holding now; a credit or
-- reset takes spent off the buckets newest first, none below 0; spent after is the window's.
-- Holds stay. Once per id: its record ('a <change> <spent> <requested> <mode> <amount> <field>', kept
-- as long as the counter: admin_record_expiry) answers a repeat that asks the same change (the
-- counter's limit field, mode and amount); one that asks another is refused ('REUSED').
-- KEYS: record, journal, counter (the bucket holding now), then the earlier buckets' counters.
-- ARGV: id, total_retention_ms, journal_maxlen, mode, amount, window_start, window_end|'', expire_at|'',
--       unit, label_json, data_json, limit_field.
if #KEYS < 3 or #ARGV ~= 12 then return fail('arity') end
local id, retention, maxlen, mode, amount = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local wstart, wend, expire_at, unit, label, data = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local asked = mode .. ' ' .. amount .. ' ' .. ARGV[12]
if not check_common(maxlen, retention) then return fail('retention') end
if mode ~= '+' and mode ~= '-' and mode ~= '0' then return fail('mode') end
if not is_int64(amount) or not is_int64(wstart) then return fail('amount') end
if wend ~= '' and not is_int64(wend) then return fail('window') end
if expire_at ~= '' and not is_int64(expire_at) then return fail('expiry') end
if not string.match(unit, '^%l+$') or not string.match(label, '^%[.*%]$') then return fail('counter') end
if string.find(data, '\n', 1, true) then return fail('meta') end

local rec = redis.call('GET', KEYS[1])
if rec then
  local change, spent, requested, was = string.match(rec, '^a (%-?%d+) (%d+) (%-?%d*) (.*)$')
  if not change then return fail('id') end
  if was ~= asked then return {'REUSED'} end
  return {'DUP', change, spent, requested}
end
local now = now_ms()
if not in_window(now, wstart + 0, wend ~= '' and wend + 0 or nil) then return {'WINDOW', tostring(now)} end
local now_s = string.format('%d', now)

local spents, sh, sl = {}, 0, 0  -- each bucket's spent; the window's
for i = 3, #KEYS do
  spents[i] = redis.call('HGET', KEYS[i], 'spent') or '0'
  sh, sl = add(sh, sl, limbs(spents[i]))
end
local spent = decimal(sh, sl)
local ah, al = limbs(amount)
local after, change
if mode == '+' then
  local nh, nl = add(sh, sl, ah, al)
  if not fits(nh, nl) then return fail('overflow') end
  after, change = decimal(nh, nl), amount
elseif mode == '-' and not le(sh, sl, ah, al) then
  after, change = decimal(sub(sh, sl, ah, al)), '-' .. amount
else
  after, change = '0', spent == '0' and '0' or '-' .. spent
end
local requested = mode == '+' and amount or mode == '-' and '-' .. amount or ''
local existed = redis.call('EXISTS', KEYS[3]) == 1
if mode == '+' then
  local bh, bl = limbs(spents[3])
  redis.call('HSET', KEYS[3], 'spent', decimal(add(bh, bl, ah, al)))
else
  local lh, ll = limbs(change == '0' and '0' or string.sub(change, 2))  -- what is still to take off
  for i = 3, #KEYS do
    local bh, bl = limbs(spents[i])
    local left = '0'
    if le(bh, bl, lh, ll) then lh, ll = sub(lh, ll, bh, bl)
    else left, lh, ll = decimal(sub(bh, bl, lh, ll)), 0, 0 end
    if i == 3 or left ~= spents[i] then redis.call('HSET', KEYS[i], 'spent', left) end
  end
end
if not existed and expire_at ~= '' then redis.call('PEXPIREAT', KEYS[3], expire_at) end
put_record(KEYS[1], 'a ' .. change .. ' ' .. after .. ' ' .. requested .. ' ' .. asked, now,
  admin_record_expiry(now, expire_at ~= '' and expire_at + 0 or nil, retention + 0))
if mode == '-' and change ~= requested then data = merge(data, '{"requested":' .. requested .. '}') end
xadd(KEYS[2], maxlen, now_s, mode == '0' and 'reset' or 'adjusted', id, label, '{"' .. unit .. '":' .. change .. '}', data)
return {'OK', change, after, requested}
