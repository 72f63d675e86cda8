-- Takes back the deliveries of a worker whose heartbeat expired (or of a worker handing
-- back what it claimed and never started, on shutdown). An attempt that may have been
-- under way when the worker died is recorded as interrupted: the receiver may or may not
-- have seen it, and the next attempt carries the same delivery id.
--
-- KEYS[1]  the worker's heartbeat         KEYS[2]  the worker's in-flight hash
-- KEYS[3]  the channel's queue            KEYS[4]  the set of worker ids
-- KEYS[5]  the attempt log queue          KEYS[6]  the dead-letter list
-- KEYS[7]  the backlog hash
-- ARGV[1]  worker id   ARGV[2]  "1" to take them back even though the heartbeat exists
-- ARGV[3]  dead letters kept
-- ARGV[4..] groups of 5: claim id, action (requeue | dead), payload (the delivery to
--          requeue, or the dead letter), attempt record ("" for none), backlog field
-- Returns  the number taken back, or -1 when the worker is alive (nothing done).
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local taken = 0
for i = 4, #ARGV, 5 do
  local claim, action, payload, record, field = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if redis.call('HDEL', KEYS[2], claim) == 1 then
    taken = taken + 1
    if action == 'dead' then
      redis.call('LPUSH', KEYS[6], payload)
      redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[3]) - 1)
      if field ~= '' and redis.call('HINCRBY', KEYS[7], field, -1) <= 0 then
        redis.call('HDEL', KEYS[7], field)
      end
    else
      redis.call('RPUSH', KEYS[3], payload)
    end
    if record ~= '' then
      redis.call('LPUSH', KEYS[5], record)
    end
  end
end
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[1])
  redis.call('SREM', KEYS[4], ARGV[1])
end
return taken
