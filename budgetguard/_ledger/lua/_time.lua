-- The ledger's time arithmetic, mirrored function for function from _ledger/_expiry.py (the one
-- definition; tests/ledger/test_time_mirror.py runs one table of cases through both). Epoch ms of
-- the server's clock, below 2^53: exact in Lua numbers. Prepended to every budgetguard script.
-- A counter's expiry (its window end plus retention) is computed in Python and passed in.

-- now lies in the half-open window [start, wend) (wend nil: it never ends)
local function in_window(now, start, wend)
  return start <= now and (wend == nil or now < wend)
end

-- when a hold taken at now for lease ms expires
local function lease_end(now, lease)
  return now + lease
end

-- when a reservation's record is dropped: retention after its lease ends, never before retention
-- after now (a late resolution, or a refusal: lease_ends nil)
local function record_expiry(now, lease_ends, retention)
  if lease_ends == nil or lease_ends < now then return now + retention end
  return lease_ends + retention
end

-- when an adjustment's record is dropped: with the counter it changed (counter_expires, its expiry),
-- total_ms after now for a total (counter_expires nil)
local function admin_record_expiry(now, counter_expires, total_ms)
  if counter_expires == nil then return now + total_ms end
  return counter_expires
end

-- the ids of the leases in the sorted set that are over at now (their score is their end; a lease
-- ending at now is over, as _expiry.expired says), at most 1000 (bounded work per call)
local function expired_leases(leases, now)
  return redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', '0', '1000')
end
