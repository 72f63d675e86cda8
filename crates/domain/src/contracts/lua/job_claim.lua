-- Claims one queued job for a worker: out of the queue, into the leases with a lease that
-- its heartbeat renews, its attempt counted. A job that left the queue meanwhile (another
-- worker claimed it) is not claimed twice.
--
-- KEYS[1]  the job queue   KEYS[2]  the leases   KEYS[3]  the job's record
-- ARGV[1]  job id   ARGV[2]  worker id   ARGV[3]  now, epoch ms   ARGV[4]  lease, ms
-- Returns  {attempt, spec} of the claimed job, or false
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return false
end
local state = redis.call('HGET', KEYS[3], 'state')
if state ~= 'queued' then
  -- Gone (expired) or already ended: nothing to run.
  return false
end
local attempt = redis.call('HINCRBY', KEYS[3], 'attempt', 1)
redis.call('HSET', KEYS[3], 'state', 'running', 'worker', ARGV[2], 'heartbeat_at_ms', ARGV[3])
redis.call('HSETNX', KEYS[3], 'started_at_ms', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
return {attempt, redis.call('HGET', KEYS[3], 'spec')}
