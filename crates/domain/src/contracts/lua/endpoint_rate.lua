-- One webhook endpoint's rate limit, shared by every worker (GCRA: the limiter keeps
-- the theoretical arrival time of the next delivery; a delivery may go when that time is
-- less than a burst's worth ahead of now).
--
-- KEYS[1]  the endpoint's limiter
-- ARGV[1]  now, epoch ms   ARGV[2]  milliseconds per delivery (1000 / rate)
-- ARGV[3]  burst tolerance, ms (a second's worth of deliveries may go at once)
-- Returns  0 when the delivery may go now (counted), else how many ms to wait.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
if tat - tolerance > now then
  return math.ceil(tat - tolerance - now)
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now + tolerance) + 1000)
return 0
