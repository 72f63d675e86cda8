-- Accepts notifications of one shard: records each and queues its fan-out in one atomic
-- step, so a 202 always means the notification is in Redis and will reach every channel
-- it names. A trigger sends the notifications of a whole batch in one call.
--
-- KEYS[1]        the notification shard's queue
-- KEYS[2i]       notification i's public record
-- KEYS[2i+1]     notification i's idempotency key (when its idempotency TTL is "0":
--                unused, any key of the shard)
-- ARGV[1]        the records' TTL, seconds
-- ARGV[5i-3..5i+1], for notification i:
--                the queue message (the notification, JSON), the public record (JSON),
--                the idempotency TTL in seconds ("0" when it has no Idempotency-Key),
--                the notification id, the request's fingerprint
-- Returns  {outcome, notification id} for each notification, flat. outcome: accepted |
--          replay (the key answered this same request before: its notification id) |
--          key_reused (the key answered another request: nothing done).
local out = {}
local n = (#KEYS - 1) / 2
for i = 1, n do
  local record, idem = KEYS[2 * i], KEYS[2 * i + 1]
  local a = 5 * i - 3
  local message, public, idem_ttl = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local id, fingerprint = ARGV[a + 3], ARGV[a + 4]
  local prior = idem_ttl > 0 and redis.call('GET', idem)
  if prior then
    local nl = string.find(prior, '\n', 1, true)
    local prior_id = string.sub(prior, 1, nl - 1)
    out[#out + 1] = string.sub(prior, nl + 1) == fingerprint and 'replay' or 'key_reused'
    out[#out + 1] = prior_id
  else
    redis.call('SET', record, public, 'EX', tonumber(ARGV[1]))
    redis.call('LPUSH', KEYS[1], message)
    if idem_ttl > 0 then
      redis.call('SET', idem, id .. '\n' .. fingerprint, 'EX', idem_ttl)
    end
    out[#out + 1] = 'accepted'
    out[#out + 1] = id
  end
end
return out
