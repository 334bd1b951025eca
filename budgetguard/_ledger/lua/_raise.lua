-- A temporary raise of a counter's limit (_admin.py): the raised limit is the counter's run-time limit
-- (its field of the limits hash), with field..'~until' (when it ends, ms) and field..'~base' (the
-- run-time limit it raised; absent: it raised the limit in code) beside it. Prepended after _lib.lua.

-- The counter's run-time limit at now, given the stored one (value, false: none): a raised limit until
-- the raise ends, then (written back here) the limit it raised. A counter without one pays nothing.
local function live_limit(limits, field, value, now)
  if not value then return nil end
  local r = redis.call('HMGET', limits, field .. '~until', field .. '~base')
  if not r[1] or now < r[1] + 0 then return value end
  if r[2] then redis.call('HSET', limits, field, r[2]) else redis.call('HDEL', limits, field) end
  redis.call('HDEL', limits, field .. '~until', field .. '~base')
  return r[2] or nil
end
