-- Puts a worker's processing list back at the consuming end of its queue, atomically.
-- Used by reapers on a worker whose heartbeat expired, and by a worker handing back its own
-- batch on shutdown.
--
-- KEYS[1]  the worker's heartbeat key
-- KEYS[2]  the worker's processing list
-- KEYS[3]  queue list
-- KEYS[4]  set of worker ids
-- ARGV[1]  worker id
-- ARGV[2]  "1" to requeue even though the heartbeat exists (the worker's own hand-back)
-- Returns  the number of items requeued, or -1 when the worker is alive (nothing done).
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local count = #items
for i = 1, count, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(items, i, math.min(i + 999, count)))
end
redis.call('DEL', KEYS[2], KEYS[1])
redis.call('SREM', KEYS[4], ARGV[1])
return count
