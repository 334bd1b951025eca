-- batch: several operations of concurrent callers in one call (group commit, _redis_batch.py), each
-- with its own outcome exactly as its own script would give it: one operation's refusal or error
-- never touches another's. Prepended: _lib.lua, _reserve.lua, _resolve.lua, and the fast paths
-- _reserve_fast.lua, _commit_fast.lua (their functions; a fast path's {'G'} goes back to its caller,
-- who sends the general operation next).
-- KEYS: every operation's keys, in order. ARGV: per operation, '<op> <nkeys> <nargs>' (op: reserve,
-- commit, release), then its arguments. Reply: one per operation, in order (an error as an error).
local OPS = {
  reserve = reserve,
  commit = function(keys, args, now) return resolve('committed', keys, args, now) end,
  release = function(keys, args, now) return resolve('released', keys, args, now) end,
  reserve_fast = reserve_fast,
  commit_fast = commit_fast,
}
local out, shapes = {}, {}  -- shapes: per distinct header, {run, nkeys, nargs} (headers repeat)
local k, a = 0, 1
while a <= #ARGV do
  local shape = shapes[ARGV[a]]
  if not shape then
    local op, nk, na = string.match(ARGV[a], '^([%l_]+) (%d+) (%d+)$')
    if not OPS[op] then return fail('batch') end  -- (before the first operation: nothing ran yet)
    shape = {OPS[op], nk + 0, na + 0}
    shapes[ARGV[a]] = shape
  end
  local nk, na = shape[2], shape[3]
  if k + nk > #KEYS or a + na > #ARGV then return fail('batch') end
  out[#out + 1] = {shape[1], k, a, nk, na}
  k, a = k + nk, a + 1 + na
end
if k ~= #KEYS then return fail('batch') end
local now = now_ms()  -- one TIME for all: the operations run in the same instant
scanned, int64s = {}, {}  -- (_lib.lua: a leases set scanned once a batch, a number checked once)
for i = 1, #out do
  local run, k0, a0, nk, na = unpack(out[i])
  -- (each table built in one go: filled key by key, it grows four times)
  local ok, reply = pcall(run, {unpack(KEYS, k0 + 1, k0 + nk)}, {unpack(ARGV, a0 + 1, a0 + na)}, now)
  if not ok then  -- a command's error (its own script would have failed with it)
    if type(reply) == 'table' and reply.err then reply = redis.error_reply(reply.err)
    else reply = redis.error_reply('ERR ' .. tostring(reply)) end
  end
  out[i] = reply
end
return out
