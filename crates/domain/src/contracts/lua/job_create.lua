-- Creates a job unless its idempotency key already names one, and unless its client has
-- the most unfinished jobs allowed: record, client count and queue change together.
--
-- KEYS[1]  the idempotency key (a key of the same hash tag, unused, without one)
-- KEYS[2]  the new job's record   KEYS[3]  the job queue
-- KEYS[4]  active jobs (job id -> client)   KEYS[5]  unfinished jobs per client
-- ARGV[1]  job id   ARGV[2]  client   ARGV[3]  most unfinished jobs per client
-- ARGV[4]  idempotency key TTL, ms   ARGV[5]  "1" when KEYS[1] is an idempotency key
-- ARGV[6..] the record's fields and values
-- Returns  {"created", id} | {"existing", id of the key's job} | {"busy", unfinished count}
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    return {'existing', existing}
  end
end
local unfinished = tonumber(redis.call('HGET', KEYS[5], ARGV[2]) or '0')
if unfinished >= tonumber(ARGV[3]) then
  return {'busy', tostring(unfinished)}
end
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[1])
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
end
return {'created', ARGV[1]}
