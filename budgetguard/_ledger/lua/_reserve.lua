-- reserve: admit a reservation on every counter or on none (prepended after _lib.lua). The reserve
-- script runs this function's body as its own code (_redis_wire._ALONE); batch.lua calls it.
-- Every key written has an expiry, but two: the limits hash (run-time limits an operator set live
-- until cleared, see set_limit.lua) and the journal stream (the history reports read, capped by
-- XADD MAXLEN ~ journal_maxlen); and a 'total' counter, which never resets (below).
-- KEYS: record, limits, journal, then (counter, leases) per hold, then those of the earlier buckets
--       of each rolling counter (newest first), in hold order.
-- ARGV: id, lease_ms, retention_ms, journal_maxlen, meta_json, held_json, enforce ('1' check, '0' hold
--       without checking, 's' check in shadow; or one of those letters per hold), rolling ('' or
--       '<hold>:<buckets>,' per rolling hold: its earlier buckets, which a check counts with its own),
--       then one per hold, packed (one argument costs the client more than the server's string.match):
--       'amount,default_limit,window_start,window_end|,expire_at|,unit,limit_field,label_json'.
-- now: the server's time in ms (batch.lua reads it once for all its operations), else read here.
local function reserve(KEYS, ARGV, now)
  local id, lease, retention, maxlen, meta, held_json = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local mode = ARGV[7]
  local H = 8  -- header arguments before the per-hold ones
  local n = #ARGV - H
  if n < 1 then return fail('arity') end
  local earlier, k = nil, 3 + 2 * n  -- per rolling hold: {first key of its earlier buckets, buckets}
  if ARGV[8] ~= '' then
    if string.find(ARGV[8], '^[%d:,]+$') == nil then return fail('rolling') end
    earlier = {}
    for i, b in string.gmatch(ARGV[8], '(%d+):(%d+),') do
      i, b = i + 0, b + 0
      if i < 1 or i > n or earlier[i] then return fail('rolling') end
      earlier[i] = {k, b}
      k = k + 2 * b
    end
  end
  if #KEYS ~= k then return fail('arity') end
  if mode ~= '1' and ((#mode ~= 1 and #mode ~= n) or string.find(mode, '[^01s]')) then return fail('enforce') end
  if not is_int64(lease) or lease == '0' or not check_common(maxlen, retention) then return fail('lease') end
  local holds = {}
  for i = 1, n do
    local h = {string.match(ARGV[H + i], '^(%d+),(%d+),(%d+),(%d*),(%d*),(%l+),([%w_-]+),(%[.*%])$')}
    if #h ~= 8 then return fail('hold') end
    if not digits64(h[1]) or not digits64(h[2]) or not digits64(h[3]) then return fail('amount') end
    if h[4] ~= '' and not digits64(h[4]) then return fail('window') end
    if h[5] ~= '' and not digits64(h[5]) then return fail('expiry') end
    holds[i] = h  -- amount, default_limit, window_start, window_end, expire_at, unit, limit_field, label_json
  end
  if string.find(meta, '\n', 1, true) then return fail('meta') end

  local rec = get_record(KEYS[1])
  if rec then
    if rec.state == 'refused' then
      return {'REFUSED', rec.idx, rec.limit, rec.spent, rec.held, rec.requested, rec.wend, '1', rec.holds}
    end
    return {'OK', rec.created, rec.expires, rec.lims, '1', rec.holds}
  end

  now = now or now_ms()
  local now_s = string.format('%d', now)
  for i = 1, n do
    local h = holds[i]
    if not in_window(now, h[3] + 0, h[4] ~= '' and h[4] + 0 or nil) then  -- ('': no end)
      return {'WINDOW', tostring(now)}
    end
  end

  for i = 1, n do
    reclaim(KEYS[2 + 2 * i], KEYS[3 + 2 * i], now_s, holds[i][8], holds[i][6], KEYS[3], maxlen)
  end

  local overrides  -- run-time limits, one read for all
  if n == 1 then overrides = {redis.call('HGET', KEYS[2], holds[1][7])}  -- (HGET: half HMGET's cost)
  else
    local fields = {}
    for i = 1, n do fields[i] = holds[i][7] end
    overrides = redis.call('HMGET', KEYS[2], unpack(fields))
  end
  local lims, fresh, fresh_leases, after = {}, {}, {}, {}
  local shadow  -- the first refusal in shadow (admitted): its reply fields, then its journal entry
  for i = 1, n do
    local h = holds[i]
    local check = #mode == 1 and mode or string.sub(mode, i, i)
    local amount = h[1]
    local limit = overrides[i] and live_limit(KEYS[2], h[7], overrides[i], now) or h[2]
    local c = redis.call('HMGET', KEYS[2 + 2 * i], 'spent', 'held')
    local spent, held = c[1] or '0', c[2] or '0'
    local over, nh, nl  -- spent + held + amount is past the limit; held once the hold is taken (limbs)
    local rolling = earlier and earlier[i]
    if not rolling and #spent <= 15 and #held <= 15 and #amount <= 15 then
      -- as numbers (each below 10^15: the sums are exact); a limit past 2^53 rounds to at least 2^53,
      -- above the sum, so the comparison is exact too
      local nheld = held + amount
      over = spent + nheld > limit + 0
      after[i] = string.format('%d', nheld)
    else
      local sh, sl = num(spent)
      local hh, hl = num(held)
      local ah, al = limbs(amount)
      nh, nl = add(hh, hl, ah, al)  -- this bucket's held once the hold is taken
      local th, tl  -- spent + held + amount over the window (a rolling counter: its earlier buckets too)
      if rolling then
        local all_h, all_l = hh, hl
        local first, buckets = rolling[1], rolling[2]
        for j = 0, buckets - 1 do
          local bucket, bucket_leases = KEYS[first + 1 + 2 * j], KEYS[first + 2 + 2 * j]
          reclaim(bucket, bucket_leases, now_s, h[8], h[6], KEYS[3], maxlen)
          local e = redis.call('HMGET', bucket, 'spent', 'held')
          if e[1] then sh, sl = add(sh, sl, limbs(e[1])) end
          if e[2] then all_h, all_l = add(all_h, all_l, limbs(e[2])) end
        end
        spent, held = decimal(sh, sl), decimal(all_h, all_l)
        th, tl = add(sh, sl, add(all_h, all_l, ah, al))
      else
        th, tl = add(sh, sl, nh, nl)
      end
      local lh, ll = limbs(limit)
      over = not le(th, tl, lh, ll)
    end
    if check == 's' and not shadow and over then
      shadow = {tostring(i - 1), limit, spent, held, amount, h[4], h[8], h[6]}
    elseif check == '1' and over then
      put_record(KEYS[1], 'x ' .. (i - 1) .. ' ' .. limit .. ' ' .. spent .. ' ' .. held .. ' ' .. amount .. ' ' ..
        h[4] .. '\n\n' .. held_json, now, record_expiry(now, nil, retention + 0))
      xadd(KEYS[3], maxlen, now_s, 'x', id, h[8], '{"' .. h[6] .. '":' .. amount .. '}', meta)
      return {'REFUSED', tostring(i - 1), limit, spent, held, amount, h[4], '0', held_json}
    end
    if nh then  -- (by limbs)
      if not fits(nh, nl) then return fail('overflow') end  -- (enforce off, before the first write)
      after[i] = decimal(nh, nl)  -- held once this hold is taken
    end
    lims[i] = limit
    -- TTLs are set when a key is created: a counter's hash and its leases set live as long as its
    -- window plus retention (expire_at); a leases set is also deleted when it empties, which only
    -- happens with nothing held. A 'total' counter (no window end, no expire_at) never resets, so it
    -- is kept for good, and its leases set until it empties (the next operation on the counter
    -- reclaims what expired).
    fresh[i], fresh_leases[i] = c[1] == false and c[2] == false, (c[2] or '0') == '0'
  end

  local expires = lease_end(now, lease + 0)
  local expires_s = string.format('%d', expires)
  local amts = n > 1 and {}  -- (one hold's: its amount, no table)
  for i = 1, n do
    local h = holds[i]
    local counter, leases = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    -- held and this reservation's r:<id> in one write (held as read above plus the amount: the
    -- script runs alone, so it is what HINCRBY would leave)
    if h[1] ~= '0' then redis.call('HSET', counter, 'held', after[i], 'r:' .. id, h[1])
    else redis.call('HSET', counter, 'r:' .. id, h[1]) end
    redis.call('ZADD', leases, expires_s, id)
    if h[5] ~= '' then
      if fresh[i] then redis.call('PEXPIREAT', counter, h[5]) end
      if fresh_leases[i] then redis.call('PEXPIREAT', leases, h[5]) end
    end
    if amts then amts[i] = h[1] end
  end
  local lims_csv = n == 1 and lims[1] or table.concat(lims, ',')
  local amts_csv = amts and table.concat(amts, ',') or holds[1][1]
  put_record(KEYS[1], 'h ' .. now_s .. ' ' .. expires_s .. ' ' .. lims_csv .. ' ' .. amts_csv .. '\n' ..
    meta .. '\n' .. held_json, now, record_expiry(now, expires, retention + 0))
  if shadow then
    xadd(KEYS[3], maxlen, now_s, 's', id, shadow[7], '{"' .. shadow[8] .. '":' .. shadow[5] .. '}', meta)
    return {'OK', now_s, expires_s, lims_csv, '0', table.concat(shadow, ' ', 1, 6)}
  end
  return {'OK', now_s, expires_s, lims_csv, '0'}
end
