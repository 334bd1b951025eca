-- record: a reservation's state and holds, for a commit or release by id (which needs its counters).
-- KEYS: record. Reply: {} (unknown), or {state, holds_json}. Reads only.
if #KEYS ~= 1 or #ARGV ~= 0 then return fail('arity') end
local r = get_record(KEYS[1])
if not r then return {} end
return {r.state, r.holds}
