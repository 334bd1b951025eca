-- A call's name (its model and function, one JSON text) in the namespace's names table (KEYS[1]): its
-- number, the same for every process (the first to ask takes the next one), or false once the table
-- holds ARGV[2] names (the caller then journals the name itself). The table never expires: it is kept
-- as long as the journal whose entries name its numbers (_redis_names.py).
-- Fields: '#' the last number given, '=<name>' a name's number, '<number>' its name.
local names, name = KEYS[1], ARGV[1]
local found = redis.call('HGET', names, '=' .. name)
if found then return found end
local n = tonumber(redis.call('HGET', names, '#') or '0')
if n >= tonumber(ARGV[2]) then return false end
n = n + 1
redis.call('HSET', names, '#', n, '=' .. name, n, n, name)
return n
