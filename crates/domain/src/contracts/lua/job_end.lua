-- Ends a job: done or failed, its lease and its place in its client's count released, its
-- record kept until its results expire. Only the attempt that holds the job ends it;
-- a job whose lease expired is ended by the reaper (ARGV[2] = "reap": only if the lease is
-- still expired, and then as failed or queued again, by its attempts).
--
-- KEYS[1]  the leases   KEYS[2]  the job's record   KEYS[3]  the job queue
-- KEYS[4]  active jobs (job id -> client)   KEYS[5]  unfinished jobs per client
-- ARGV[1]  job id   ARGV[2]  attempt, or "reap"   ARGV[3]  now, epoch ms
-- ARGV[4]  state: done | failed   ARGV[5]  rows completed ("" to keep)   ARGV[6]  rows in total ("" to keep)
-- ARGV[7]  error ("" for none)   ARGV[8]  how long the record is kept, ms
-- ARGV[9]  (reap) most attempts before a job fails
-- Returns  1 ended, 2 (reap) queued again, 0 nothing done
local function release()
  local client = redis.call('HGET', KEYS[4], ARGV[1])
  if client then
    redis.call('HDEL', KEYS[4], ARGV[1])
    if redis.call('HINCRBY', KEYS[5], client, -1) <= 0 then
      redis.call('HDEL', KEYS[5], client)
    end
  end
end
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'done' or state == 'failed' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
if ARGV[2] == 'reap' then
  local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not lease or tonumber(lease) > tonumber(ARGV[3]) then
    return 0
  end
  redis.call('ZREM', KEYS[1], ARGV[1])
  if not state then
    release()
    return 0
  end
  local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
  if attempt < tonumber(ARGV[9]) then
    redis.call('HSET', KEYS[2], 'state', 'queued')
    redis.call('HDEL', KEYS[2], 'worker')
    redis.call('RPUSH', KEYS[3], ARGV[1])
    return 2
  end
elseif redis.call('HGET', KEYS[2], 'attempt') ~= ARGV[2] or state ~= 'running' then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
local keep = tonumber(ARGV[8])
redis.call('HSET', KEYS[2], 'state', ARGV[4], 'finished_at_ms', ARGV[3], 'expires_at_ms', string.format('%.0f', now + keep))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], 'completed', ARGV[5])
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], 'total', ARGV[6])
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'error', ARGV[7])
end
redis.call('HDEL', KEYS[2], 'worker')
redis.call('PEXPIRE', KEYS[2], keep)
release()
return 1
