-- Appends one notification to the feeds of a chunk of users of one feed shard, and
-- publishes the new items on the shard's channel, atomically: a user's items get their
-- sequence numbers and go out in that order, whatever else appends to their feed at once.
-- A user whose feed already holds the notification keeps its item (a replayed fan-out
-- changes nothing and publishes nothing for them).
--
-- KEYS     per user: their items (sorted set), state (hash), read set, in ARGV[6..] order
-- ARGV[1]  notification id       ARGV[2]  now, epoch ms (the epoch of a new feed)
-- ARGV[3]  items kept per feed   ARGV[4]  the shard's pub/sub channel
-- ARGV[5]  the item as feeds show it (JSON)
-- ARGV[6..] the users, each as a JSON string (escaped by the service)
-- Returns  per user: epoch, sequence number (as strings), flattened.
-- Publishes {"n": item, "u": [[user, epoch, seq, unread], ...]} for the new items.
local keep = tonumber(ARGV[3])
local out = {}
local fresh = {}
for i = 6, #ARGV do
  local items = KEYS[(i - 6) * 3 + 1]
  local state = KEYS[(i - 6) * 3 + 2]
  local epoch = redis.call('HGET', state, 'epoch')
  if not epoch then
    epoch = ARGV[2]
    redis.call('HSET', state, 'epoch', epoch)
  end
  local existing = redis.call('ZSCORE', items, ARGV[1])
  if existing then
    out[#out + 1] = epoch
    out[#out + 1] = existing
  else
    local seq = redis.call('HINCRBY', state, 'seq', 1)
    local unread = redis.call('HINCRBY', state, 'unread', 1)
    redis.call('ZADD', items, seq, ARGV[1])
    -- A feed holds at most `seq` items: only one that ever got more than `keep` may need
    -- trimming (most never do, and skip the count).
    if seq > keep and redis.call('ZCARD', items) > keep then
      -- Items leaving the feed leave the read set too (it stays bounded by the feed).
      local gone = redis.call('ZRANGE', items, 0, -keep - 1, 'WITHSCORES')
      for j = 2, #gone, 2 do
        redis.call('SREM', KEYS[(i - 6) * 3 + 3], gone[j])
      end
      redis.call('ZREMRANGEBYRANK', items, 0, -keep - 1)
    end
    out[#out + 1] = epoch
    out[#out + 1] = tostring(seq)
    fresh[#fresh + 1] = '[' .. ARGV[i] .. ',' .. epoch .. ',' .. seq .. ',' .. unread .. ']'
  end
end
if #fresh > 0 then
  redis.call('PUBLISH', ARGV[4], '{"n":' .. ARGV[5] .. ',"u":[' .. table.concat(fresh, ',') .. ']}')
end
return out
