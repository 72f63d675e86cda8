-- Accepts a notification: records it and queues its fan-out in one atomic step, so a 202
-- always means the notification is in Redis and will reach every channel it names.
--
-- KEYS[1]  the notification shard's queue
-- KEYS[2]  the notification's public record
-- KEYS[3]  the idempotency key of the request (when ARGV[4] is "0": unused, any key of the shard)
-- ARGV[1]  the queue message (the notification, JSON)
-- ARGV[2]  the public record (JSON)        ARGV[3]  the record's TTL, seconds
-- ARGV[4]  idempotency TTL in seconds, "0" when the request has no Idempotency-Key
-- ARGV[5]  the notification id             ARGV[6]  the request's fingerprint
-- Returns  {outcome, notification id}. outcome: accepted | replay (the key answered this
--          same request before: its notification id) | key_reused (the key answered
--          another request: nothing done).
local use_idem = ARGV[4] ~= '0'
if use_idem then
  local prior = redis.call('GET', KEYS[3])
  if prior then
    local nl = string.find(prior, '\n', 1, true)
    local id = string.sub(prior, 1, nl - 1)
    if string.sub(prior, nl + 1) == ARGV[6] then
      return {'replay', id}
    end
    return {'key_reused', id}
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('LPUSH', KEYS[1], ARGV[1])
if use_idem then
  redis.call('SET', KEYS[3], ARGV[5] .. '\n' .. ARGV[6], 'EX', tonumber(ARGV[4]))
end
return {'accepted', ARGV[5]}
