-- A running job's heartbeat: extends its lease and records its progress, if the job is
-- still this attempt's (a worker that stalled past its lease has lost the job to another).
-- Progress only moves forward.
--
-- KEYS[1]  the leases   KEYS[2]  the job's record
-- ARGV[1]  job id   ARGV[2]  attempt   ARGV[3]  now, epoch ms   ARGV[4]  lease, ms
-- ARGV[5]  rows completed   ARGV[6]  rows in total
-- Returns  1, or 0 when the job is no longer this attempt's
if redis.call('HGET', KEYS[2], 'attempt') ~= ARGV[2] or redis.call('HGET', KEYS[2], 'state') ~= 'running' then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
local completed = tonumber(redis.call('HGET', KEYS[2], 'completed') or '0')
if tonumber(ARGV[5]) > completed then
  redis.call('HSET', KEYS[2], 'completed', ARGV[5])
end
redis.call('HSET', KEYS[2], 'total', ARGV[6], 'heartbeat_at_ms', ARGV[3])
return 1
