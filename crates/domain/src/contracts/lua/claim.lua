-- Claims up to ARGV[1] of the oldest items of a queue for one worker, atomically.
--
-- KEYS[1]  queue list (producers LPUSH at the head; the oldest item is at the tail)
-- KEYS[2]  the worker's processing list
-- KEYS[3]  set of worker ids that may own a processing list
-- ARGV[1]  most items to claim (> 0)
-- ARGV[2]  worker id
-- Returns  the claimed items, newest first (the order they now have in KEYS[2]).
--
-- The items are in the processing list before the script returns, so a worker that dies
-- after this point leaves them where a reaper finds them (see requeue.lua).
redis.call('SADD', KEYS[3], ARGV[2])
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], -n, -1)
local count = #items
if count == 0 then
  return items
end
redis.call('LTRIM', KEYS[1], 0, -count - 1)
-- unpack() is bounded by Lua's C stack, so push in slices.
for i = 1, count, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, count)))
end
return items
