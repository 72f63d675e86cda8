-- Stores one cached answer in a site's cache hash, keeping the hash bounded.
-- KEYS[1] the site's cache hash
-- ARGV[1] signature, ARGV[2] "generation|body", ARGV[3] TTL seconds, ARGV[4] most entries
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
