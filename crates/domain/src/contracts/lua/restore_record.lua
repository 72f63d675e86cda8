-- Puts one record from PostgreSQL back into a registry hash, unless the hash already holds
-- the same or a newer version of it (a change made since the restore began).
--
-- KEYS[1]  the record's hash   KEYS[2]  the set of ids   KEYS[3]  the registry's version
-- ARGV[1]  the record's id
-- ARGV[2..] field, value, ... of the record (`version` among them)
-- Returns  1 when restored, 0 when Redis's copy was as new or newer.
local version
for i = 2, #ARGV, 2 do
  if ARGV[i] == 'version' then version = tonumber(ARGV[i + 1]) end
end
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current >= version then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') < version then
  redis.call('SET', KEYS[3], string.format('%.0f', version))
end
return 1
