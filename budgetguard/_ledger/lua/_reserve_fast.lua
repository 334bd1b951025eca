-- reserve_fast: the FAST PATH of a reserve (issue 17's `compat`; prepended after _lib.lua). The
-- reserve_fast script runs this function's body as its own code (_redis_wire._ALONE); batch.lua calls it.
-- It takes the very keys and arguments of reserve (_reserve.lua, the GENERAL PATH) and, when it admits,
-- writes exactly what reserve would write and gives its reply: the same record text, counter fields,
-- leases, expiries (so old and new clients mix on one namespace). It does it with fewer commands and
-- less Lua, because it handles the usual case only. Whenever anything is unusual it answers {'G'}
-- having written NOTHING, and the client sends the same call to reserve, which handles every case:
--   a repeat (the record exists), a refusal (reserve records and journals it), an ended lease on any of
--   the counters (reserve reclaims and journals it), a new counter (reserve sets its expiry), a rolling
--   counter, shadow or off enforcement, a live temporary raise, a number of more than 15 digits, the
--   server's clock outside a window, and any input reserve would refuse (reserve says why).
local function reserve_fast(KEYS, ARGV, now)
  local id, lease, retention, meta, held_json = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]
  local n = #ARGV - 8
  if n < 1 or #KEYS ~= 3 + 2 * n or ARGV[7] ~= '1' or ARGV[8] ~= '' then return {'G'} end
  if not settings_ok(lease, retention, ARGV[4]) then return {'G'} end  -- (ARGV[4]: journal_maxlen)
  if string.find(meta, '\n', 1, true) then return {'G'} end
  now = now or now_ms()
  local holds, fields = {}, {}
  for i = 1, n do
    -- amount, default_limit, window_start, window_end, expire_at, limit_field (reserve's packed hold,
    -- its unit and label unused here: they are journaled only by refusals and reclaims); nums: the
    -- numbers as sent, checked in one go: no leading zero, at most 15 digits (a limit: int64)
    local nums, amount, limit, wstart, wend, expire_at, field =
      string.match(ARGV[8 + i], '^((%d+),(%d+),(%d+),(%d*),(%d*)),%l+,([%w_-]+),%[.*%]$')
    if not nums or #amount > 15 or #wstart > 15 or #wend > 15 or #expire_at > 15
      or (#limit > 15 and not digits64(limit)) or string.find(',' .. nums, ',0%d')
      or not in_window(now, wstart + 0, wend ~= '' and wend + 0 or nil) then
      return {'G'}
    end
    holds[i] = {amount, limit, expire_at}
    fields[2 * i - 1], fields[2 * i] = field, field .. '~until'
  end
  local now_s = string.format('%d', now)
  -- (reads by pcall: a key of another type, an error, leaves for reserve, which raises it as before)
  local o = redis.pcall('HMGET', KEYS[2], unpack(fields))  -- each run-time limit and its raise's end
  if o.err then return {'G'} end
  local lims, after, fresh_leases = {}, {}, {}
  for i = 1, n do
    local h = holds[i]
    if o[2 * i] then return {'G'} end  -- a temporary raise: reserve ends it when it is over
    local leases = KEYS[3 + 2 * i]
    -- an ended lease on the counter: reserve reclaims it (_lib.lua's scanned: a batch, one now, knows
    -- the sets where none has ended at it, as a lease it adds ends later)
    if not (scanned and scanned[leases]) then
      local ended = redis.pcall('ZRANGEBYSCORE', leases, '-inf', now_s, 'LIMIT', '0', '1')
      if ended.err or ended[1] then return {'G'} end
      if scanned then scanned[leases] = true end
    end
    local c = redis.pcall('HMGET', KEYS[2 + 2 * i], 'spent', 'held')
    if c.err or (not c[1] and not c[2]) then return {'G'} end  -- a new counter: reserve sets its expiry
    local spent, held = c[1] or '0', c[2] or '0'
    if #spent > 15 or #held > 15 then return {'G'} end
    local limit = o[2 * i - 1] or h[2]
    -- as numbers (each below 10^15: the sums are exact; a limit past 2^53 rounds to at least 2^53,
    -- above the sum, as in reserve)
    local nheld = held + h[1]
    if spent + nheld > limit + 0 then return {'G'} end  -- a refusal: reserve records and journals it
    lims[i], after[i], fresh_leases[i] = limit, string.format('%d', nheld), held == '0'
  end

  local expires = lease_end(now, lease + 0)
  local expires_s = string.format('%d', expires)
  local lims_csv, amts_csv = lims[1], holds[1][1]
  if n > 1 then
    local amts = {}
    for i = 1, n do amts[i] = holds[i][1] end
    lims_csv, amts_csv = table.concat(lims, ','), table.concat(amts, ',')
  end
  -- the record first, NX: a record written since (nothing else runs during a script, so only a
  -- repeat) leaves the fast path with nothing written
  local ttl = string.format('%d', math.max(1, record_expiry(now, expires, retention + 0) - now))
  if not redis.call('SET', KEYS[1], 'h ' .. now_s .. ' ' .. expires_s .. ' ' .. lims_csv .. ' ' .. amts_csv ..
    '\n' .. meta .. '\n' .. held_json, 'PX', ttl, 'NX') then
    return {'G'}
  end
  for i = 1, n do  -- as reserve writes them
    local h = holds[i]
    local counter, leases = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    if h[1] ~= '0' then redis.call('HSET', counter, 'held', after[i], 'r:' .. id, h[1])
    else redis.call('HSET', counter, 'r:' .. id, h[1]) end
    redis.call('ZADD', leases, expires_s, id)
    if h[3] ~= '' and fresh_leases[i] then redis.call('PEXPIREAT', leases, h[3]) end
  end
  return {'OK', now_s, expires_s, lims_csv, '0'}
end
