-- raise_limit: raise a counter's limit by extra until a time (_admin.raise_limit's steps; the stored
-- form: _raise.lua). A raise in force is replaced, on the limit it raised. Once per id (the call's own,
-- new for each raise): its record ('l <raised> <ends> <base>') answers redis-py's retry after a lost
-- reply, which would otherwise raise again and journal twice.
-- KEYS: limits, journal, record.
-- ARGV: journal_maxlen, id, limit_field, default_limit, extra, 'at'|'for', ms, unit, label_json, data_json,
--       longest_ms (a raise ends at most this long after now), retention_ms (the record's).
if #KEYS ~= 3 or #ARGV ~= 12 then return fail('arity') end
local maxlen, id, field, default, extra, mode, ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local unit, label, data, longest = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
if not is_int64(longest) or not is_int64(ARGV[12]) then return fail('amount') end
local done = redis.call('GET', KEYS[3])
if done then
  local r1, r2, r3 = string.match(done, '^l (%d+) (%d+) (%d*)$')
  if not r1 then return fail('id') end
  return {'OK', r1, r2, r3}
end
if not is_int64(maxlen) or not is_int64(default) or not is_int64(extra) or not is_int64(ms) then
  return fail('amount')
end
if mode ~= 'at' and mode ~= 'for' then return fail('mode') end
if not string.match(unit, '^%l+$') or not string.match(label, '^%[.*%]$') then return fail('counter') end
if string.find(data, '\n', 1, true) then return fail('meta') end
local now = now_ms()
local ends = mode == 'for' and now + ms or ms + 0
if ends <= now then return {'PAST', string.format('%d', ends)} end
if ends - now > longest + 0 then return {'LONG', string.format('%d', ends)} end
local r = redis.call('HMGET', KEYS[1], field, field .. '~until', field .. '~base')
local base = r[1]
if r[2] then base = r[3] end  -- a raise in force (or one that ended): the limit it raised
local bh, bl = limbs(base or default)
local eh, el = limbs(extra)
local h, l = add(bh, bl, eh, el)
if not fits(h, l) then return {'OVERFLOW'} end
local raised, ends_s = decimal(h, l), string.format('%d', ends)
redis.call('HSET', KEYS[1], field, raised, field .. '~until', ends_s)
if base then redis.call('HSET', KEYS[1], field .. '~base', base) else redis.call('HDEL', KEYS[1], field .. '~base') end
xadd(KEYS[2], maxlen, string.format('%d', now), 'limit_raised', id, label, '{"' .. unit .. '":' .. extra .. '}',
  merge(data, '{"limit":' .. raised .. ',"until":' .. ends_s .. '}'))
put_record(KEYS[3], 'l ' .. raised .. ' ' .. ends_s .. ' ' .. (base or ''), now, record_expiry(now, nil, ARGV[12] + 0))
return {'OK', raised, ends_s, base or ''}
