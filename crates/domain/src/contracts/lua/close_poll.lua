-- Closes a poll (later votes get 410), queues the close for PostgreSQL and tells watchers.
-- The close is a change of state like a vote: it takes the next sequence number, so
-- watchers (who drop what they have already seen) receive it.
--
-- KEYS[1]  poll definition hash          KEYS[2]  poll tally hash
-- KEYS[3]  the poll's shard queue        KEYS[4]  the shard's "restored" marker
-- ARGV[1]  the queue message (kind "close")
-- ARGV[2]  pub/sub channel of the poll   ARGV[3]  poll id
-- Returns  closed | already_closed | not_found | restoring
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[4]) == 0 then
    return 'restoring'
  end
  return 'not_found'
end
if redis.call('HGET', KEYS[1], 'closed') == '1' then
  return 'already_closed'
end
redis.call('HSET', KEYS[1], 'closed', '1')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('LPUSH', KEYS[3], ARGV[1])
local flat = redis.call('HGETALL', KEYS[2])
local tally = {}
for i = 1, #flat, 2 do
  tally[flat[i]] = tonumber(flat[i + 1])
end
local def = redis.call('HMGET', KEYS[1], 'total', 'epoch', 'results')
redis.call(PUBLISH, ARGV[2], cjson.encode({poll_id = ARGV[3], epoch = tonumber(def[2] or '0'), seq = seq,
  tally = tally, total = tonumber(def[1]), closed = true, results = def[3] or 'always'}))
return 'closed'
