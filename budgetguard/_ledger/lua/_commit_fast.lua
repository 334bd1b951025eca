-- commit_fast: the FAST PATH of a commit (issue 17's `compat`; prepended after _lib.lua). The
-- commit_fast script runs this function's body as its own code (_redis_wire._ALONE); batch.lua calls it.
-- It takes the very keys and arguments of commit (_resolve.lua, the GENERAL PATH) and, when it commits,
-- writes exactly what commit would write and gives its reply: the same record text, counter fields and
-- journal entry (its reservation's meta read from the record, as commit reads it). It does it with
-- fewer commands and less Lua, because it handles the usual case only: a reservation still held, its
-- lease not over, each counter holding it by the amount its record says. Otherwise it answers {'G'}
-- having written NOTHING, and the client sends the same call to commit, which handles every case:
--   no record (unknown), a repeat, a refused reservation, a lease that ended (commit reclaims it and
--   says expired), a hold already gone, a number of more than 15 digits, and any input commit would
--   refuse (commit says why), a leases set of another type, and an ended lease of ANOTHER reservation
--   on any of its counters (commit reclaims and journals it first: counters are per window, so no
--   later reserve or status may ever touch this one).
local function commit_fast(KEYS, ARGV, now)
  local id, retention, maxlen, meta, scopes, amounts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local n = #ARGV - 6
  if n < 1 or #KEYS ~= 2 + 2 * n or not settings_ok(retention, maxlen, '1') then return {'G'} end
  if string.find(meta, '\n', 1, true) then return {'G'} end
  -- the record: held (h) only; none, a resolution, a refusal or an older version's hash: commit
  local rec = redis.pcall('GET', KEYS[1])
  if type(rec) ~= 'string' or string.sub(rec, 1, 1) ~= 'h' then return {'G'} end
  local created, expires, lims, amts, rmeta, holds =
    string.match(rec, '^h (%d+) (%d+) ([%d,]+) ([%d,]+)\n([^\n]*)\n(.*)$')
  if not created then return {'G'} end
  now = now or now_ms()
  if now >= expires + 0 then return {'G'} end  -- the lease ended: commit reclaims it, says expired
  local held_amts = {}
  if n == 1 then held_amts[1] = amts
  else for a in string.gmatch(amts, '%d+') do held_amts[#held_amts + 1] = a end end
  if #held_amts ~= n then return {'G'} end
  local f = 'r:' .. id
  local now_s = string.format('%d', now)
  local charges, rows = {}, {}
  for i = 1, n do  -- every check before the first write
    local charge, expire_at = string.match(ARGV[6 + i], '^(%d+),(%d*),%l+,%[.*%]$')
    if not charge or #charge > 15 or not digits64(charge) or (expire_at ~= '' and not digits64(expire_at)) then
      return {'G'}
    end
    -- another's ended lease, or a key of another type (an error: commit raises it); _lib.lua's scanned
    -- as in reserve_fast (a batch, one now: a set found with none ended at it stays so)
    local leases = KEYS[2 + 2 * i]
    if not (scanned and scanned[leases]) then
      local ended = redis.pcall('ZRANGEBYSCORE', leases, '-inf', now_s, 'LIMIT', '0', '1')
      if ended.err or ended[1] then return {'G'} end
      if scanned then scanned[leases] = true end
    end
    local v = redis.pcall('HMGET', KEYS[1 + 2 * i], 'spent', 'held', f)  -- (an error: commit raises it)
    -- still held on this counter, by the amount the record says; every number at most 15 digits
    if v.err or v[3] ~= held_amts[i] or #v[3] > 15 or #(v[1] or '') > 15 or #(v[2] or '') > 15 then return {'G'} end
    if v[3] ~= '0' and (v[2] or '0') - v[3] < 0 then return {'G'} end  -- (held below a hold: commit)
    charges[i], rows[i] = {charge, expire_at}, v
  end
  local after, overrun = {}, '0'
  for i = 1, n do  -- as commit writes them (numbers below 10^15: the sums are exact)
    local charge, expire_at = charges[i][1], charges[i][2]
    local v, counter = rows[i], KEYS[1 + 2 * i]
    after[i] = string.format('%d', (v[1] or 0) + charge)  -- spent after this commit
    local w = {}
    if v[3] ~= '0' then w[1], w[2] = 'held', string.format('%d', v[2] - v[3]) end
    if charge ~= '0' then w[#w + 1], w[#w + 2] = 'spent', after[i] end
    if #w > 0 then redis.call('HSET', counter, unpack(w)) end
    redis.call('HDEL', counter, f)
    redis.call('ZREM', KEYS[2 + 2 * i], id)
    if charge ~= '0' and not v[1] and expire_at ~= '' then
      redis.call('PEXPIREAT', counter, expire_at)  -- the first charge of a counter that may have expired
    end
    if charge + 0 > v[3] + 0 then overrun = '1' end
  end
  put_record(KEYS[1], 'c ' .. created .. ' ' .. expires .. ' ' .. lims .. ' ' .. overrun .. '0 ' ..
    table.concat(after, ',') .. '\n' .. amounts .. '\n' .. holds, now, record_expiry(now, expires + 0, retention + 0))
  local data = merge(rmeta, meta)
  if overrun == '1' then data = merge(data, '{"overrun":true}') end
  xadd(KEYS[2], maxlen, now_s, 'c', id, scopes, amounts, data)
  local reply = {'DONE', 'committed', amounts, overrun, '0'}
  for i = 1, n do reply[5 + i] = after[i] end
  return reply
end
