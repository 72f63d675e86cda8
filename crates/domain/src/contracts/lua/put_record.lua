-- Creates, changes or deletes a record of a registry (a site, a webhook endpoint) in its
-- Redis mirror and queues the result for PostgreSQL, atomically.
--
-- KEYS[1]  the record's hash          KEYS[2]  the set of the registry's ids
-- KEYS[3]  the registry's version     KEYS[4]  the "restored" marker
-- KEYS[5]  the registry's queue
-- ARGV[1]  create | update | delete   ARGV[2]  the record's id   ARGV[3]  now, epoch ms
-- ARGV[4]  the name of the id field (`site_id`, `endpoint_id`)
-- ARGV[5..] field, value pairs to set
-- Versions are the server's clock in microseconds, or one more than the last version when
-- that is later: they keep rising even after Redis lost its last writes (a crash with
-- `appendfsync everysec`, a failover), so PostgreSQL never takes a new change for an old
-- one it already stored.
-- Returns  {"restoring"} | {"exists"} | {"missing"} | {"ok", field, value, ...}: the record
--          as stored (for a delete, as it was), which is also the queued message.
if redis.call('EXISTS', KEYS[4]) == 0 then
  return {'restoring'}
end
local op = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if op == 'create' and exists then
  return {'exists'}
end
if op ~= 'create' and not exists then
  return {'missing'}
end
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local version = math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, now_us)
version = string.format('%.0f', version)
redis.call('SET', KEYS[3], version)
if op == 'create' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[2], 'created_at_ms', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[2])
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'version', version, 'updated_at_ms', ARGV[3])
local record = redis.call('HGETALL', KEYS[1])
local message = {deleted = '0'}
for i = 1, #record, 2 do
  message[record[i]] = record[i + 1]
end
if op == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  message.deleted = '1'
end
redis.call('LPUSH', KEYS[5], cjson.encode(message))
local reply = {'ok'}
for field, value in pairs(message) do
  reply[#reply + 1] = field
  reply[#reply + 1] = value
end
return reply
