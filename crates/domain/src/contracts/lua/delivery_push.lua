-- Queues one group of a notification's deliveries of a channel, once: a marker says the
-- group was queued, so a fan-out replayed after a crash queues nothing twice.
--
-- KEYS[1]  the channel's queue   KEYS[2]  the group's marker   KEYS[3]  the backlog hash
-- ARGV[1]  the marker's TTL, seconds
-- ARGV[2..] groups of 2: the delivery, its backlog field ("" for none)
-- Returns  how many were queued (0 when the group was queued before).
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return 0
end
local items = {}
for i = 2, #ARGV, 2 do
  items[#items + 1] = ARGV[i]
  if ARGV[i + 1] ~= '' then
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
  end
end
for i = 1, #items, 1000 do
  redis.call('LPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
return #items
