-- Creates a poll and queues its definition for PostgreSQL, atomically.
--
-- KEYS[1]  poll definition hash          KEYS[2]  poll tally hash
-- KEYS[3]  the poll's shard queue
-- ARGV[1]  question
-- ARGV[2]  options, JSON [{"id": .., "label": ..}, ...]
-- ARGV[3]  closes_at in epoch ms, or "" for none
-- ARGV[4]  the queue message (kind "poll")
-- ARGV[5..] the poll's settings: field, value, ... (see votes.lua)
-- Returns  1 when created, 0 when a poll with this id already exists (nothing done).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'question', ARGV[1], 'options', ARGV[2], 'closes_at_ms', ARGV[3],
  'closed', '0', 'seq', '0', 'total', '0')
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
for _, option in ipairs(cjson.decode(ARGV[2])) do
  redis.call('HSET', KEYS[2], option.id, 0)
end
redis.call('LPUSH', KEYS[3], ARGV[4])
return 1
