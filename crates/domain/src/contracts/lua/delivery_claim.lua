-- Claims up to ARGV[1] of the oldest deliveries of a channel for one worker: each moves
-- into the worker's in-flight hash under a claim id of its own, so the worker finishes
-- them one by one (HDEL) in whatever order their attempts end.
--
-- KEYS[1]  the channel's queue (LPUSH at the head; the oldest at the tail)
-- KEYS[2]  the worker's in-flight hash     KEYS[3]  the set of worker ids
-- ARGV[1]  most deliveries to claim        ARGV[2]  worker id
-- ARGV[3]  the first claim number: the deliveries get claim ids "c<ARGV[3]>", "c<ARGV[3]+1>", ...
-- Returns  the claimed deliveries, in claim id order.
redis.call('SADD', KEYS[3], ARGV[2])
local n = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], -n, -1)
local count = #items
if count == 0 then
  return items
end
redis.call('LTRIM', KEYS[1], 0, -count - 1)
local base = tonumber(ARGV[3])
local pairs_ = {}
for i = 1, count do
  pairs_[#pairs_ + 1] = 'c' .. string.format('%.0f', base + i - 1)
  pairs_[#pairs_ + 1] = items[i]
  if #pairs_ >= 1000 then
    redis.call('HSET', KEYS[2], unpack(pairs_))
    pairs_ = {}
  end
end
if #pairs_ > 0 then
  redis.call('HSET', KEYS[2], unpack(pairs_))
end
return items
