-- Moves the scheduled deliveries that are due back onto the channel's queue, at its
-- consuming end (they are next), atomically: a delivery is always in exactly one place.
--
-- KEYS[1]  the scheduled set   KEYS[2]  the channel's queue
-- ARGV[1]  now, epoch ms       ARGV[2]  most to move
-- Returns  how many moved.
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local count = #due
for i = 1, count, 1000 do
  local last = math.min(i + 999, count)
  redis.call('ZREM', KEYS[1], unpack(due, i, last))
  redis.call('RPUSH', KEYS[2], unpack(due, i, last))
end
return count
