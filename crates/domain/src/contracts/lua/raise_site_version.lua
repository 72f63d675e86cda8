-- Raises the registry's version counter to at least ARGV[1], so that changes made after a
-- restore are numbered above every version PostgreSQL holds (deleted sites included) and
-- are not taken for older ones.
--
-- KEYS[1]  the registry's version     ARGV[1]  the least version
-- Returns  the counter's value.
local floor = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < floor then
  redis.call('SET', KEYS[1], floor)
  return floor
end
return current
