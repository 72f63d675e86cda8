-- Subscribes users to a topic (or unsubscribes them) and queues each change for
-- PostgreSQL, atomically. Changes carry a version (the server's clock in microseconds),
-- so PostgreSQL keeps the newest whatever order they are stored in.
--
-- KEYS[1]  the topic's subscribers hash   KEYS[2]  the "restored" marker
-- KEYS[3]  the topics queue
-- ARGV[1]  subscribe | unsubscribe        ARGV[2]  the topic as a JSON string
-- ARGV[3]  now, epoch ms
-- ARGV[4..] subscribe: user, contact JSON, user as JSON string, ...; unsubscribe: user,
--          user as JSON string, ...
-- Returns  -1 while the subscriptions are being restored (nothing done), else the
--          number of users whose subscription changed.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return -1
end
local clock = redis.call('TIME')
local version = string.format('%.0f', tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
local changed = 0
local step = 3
if ARGV[1] == 'unsubscribe' then step = 2 end
for i = 4, #ARGV, step do
  local contact, quoted
  if step == 3 then
    contact, quoted = ARGV[i + 1], ARGV[i + 2]
    if redis.call('HGET', KEYS[1], ARGV[i]) ~= contact then
      redis.call('HSET', KEYS[1], ARGV[i], contact)
      changed = changed + 1
    end
  else
    contact, quoted = '{}', ARGV[i + 1]
    changed = changed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
  redis.call('LPUSH', KEYS[3], '{"topic":' .. ARGV[2] .. ',"user_id":' .. quoted .. ',"contact":'
    .. contact .. ',"deleted":' .. (step == 2 and 'true' or 'false') .. ',"version":' .. version
    .. ',"queued_at_ms":' .. ARGV[3] .. '}')
end
return changed
