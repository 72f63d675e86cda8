-- Finishes deliveries a worker attempted (or set aside), each in one step with what
-- follows from it: its attempt recorded for PostgreSQL, a retry scheduled or a dead letter
-- written, the endpoint's backlog counted down. A delivery no longer in the worker's
-- in-flight hash (reaped after its heartbeat expired) is left alone: whoever reaped it
-- requeued it.
--
-- KEYS[1]  the worker's in-flight hash   KEYS[2]  the scheduled set
-- KEYS[3]  the dead-letter list          KEYS[4]  the attempt log queue
-- KEYS[5]  the backlog hash
-- ARGV[1]  dead letters kept
-- ARGV[2..] groups of 6: claim id, action, payload, due (epoch ms), attempt record ("" for
--          none), backlog field ("" for none). action: done (payload unused) | retry and
--          park (payload: the delivery as it is scheduled, due at `due`) | dead (payload:
--          the dead letter).
-- Returns  how many were finished.
local finished = 0
for i = 2, #ARGV, 6 do
  local claim, action, payload, due, record, field =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  if redis.call('HDEL', KEYS[1], claim) == 1 then
    finished = finished + 1
    if action == 'retry' or action == 'park' then
      redis.call('ZADD', KEYS[2], tonumber(due), payload)
    elseif action == 'dead' then
      redis.call('LPUSH', KEYS[3], payload)
      redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[1]) - 1)
    end
    if record ~= '' then
      redis.call('LPUSH', KEYS[4], record)
    end
    if field ~= '' and (action == 'done' or action == 'dead') then
      if redis.call('HINCRBY', KEYS[5], field, -1) <= 0 then
        redis.call('HDEL', KEYS[5], field)
      end
    end
  end
end
return finished
