-- Appends notifications, in order, to the feeds of a chunk of users of one feed shard,
-- and publishes the new items on the shard's channel, atomically: a user's items get
-- their sequence numbers and go out in that order, whatever else appends to their feed
-- at once. A user whose feed already holds a notification keeps its item (a replayed
-- fan-out changes nothing and publishes nothing for them). An item trimmed out of the
-- feed since would be appended again: the worker does not replay a notification whose
-- fan-out is stored in PostgreSQL, and caps a batch at the items a feed keeps.
--
-- KEYS     per user: their items (sorted set), state (hash), read set, in user order
-- ARGV[1]  now, epoch ms (the epoch of a new feed)
-- ARGV[2]  items kept per feed   ARGV[3]  the shard's pub/sub channel
-- ARGV[4]  U, the number of users
-- ARGV[5..4+U]  the users, each as a JSON string (escaped by the service)
-- ARGV[5+U..]   per notification: its id, the item as feeds show it (JSON)
-- Returns  per notification, per user: epoch, sequence number (as strings), flattened.
-- Publishes, per notification with new items, {"n": item, "u": [[user, epoch, seq, unread], ...]}.
local keep = tonumber(ARGV[2])
local users = tonumber(ARGV[4])
local out = {}
for n = 5 + users, #ARGV, 2 do
  local id = ARGV[n]
  local fresh = {}
  for u = 1, users do
    local items = KEYS[(u - 1) * 3 + 1]
    local state = KEYS[(u - 1) * 3 + 2]
    local epoch = redis.call('HGET', state, 'epoch')
    if not epoch then
      epoch = ARGV[1]
      redis.call('HSET', state, 'epoch', epoch)
    end
    local existing = redis.call('ZSCORE', items, id)
    if existing then
      out[#out + 1] = epoch
      out[#out + 1] = existing
    else
      local seq = redis.call('HINCRBY', state, 'seq', 1)
      local unread = redis.call('HINCRBY', state, 'unread', 1)
      redis.call('ZADD', items, seq, id)
      -- A feed holds at most `seq` items: only one that ever got more than `keep` may
      -- need trimming (most never do, and skip the count).
      if seq > keep and redis.call('ZCARD', items) > keep then
        -- Items leaving the feed leave the read set too (it stays bounded by the feed).
        local gone = redis.call('ZRANGE', items, 0, -keep - 1, 'WITHSCORES')
        for j = 2, #gone, 2 do
          redis.call('SREM', KEYS[(u - 1) * 3 + 3], gone[j])
        end
        redis.call('ZREMRANGEBYRANK', items, 0, -keep - 1)
      end
      out[#out + 1] = epoch
      out[#out + 1] = tostring(seq)
      fresh[#fresh + 1] = '[' .. ARGV[4 + u] .. ',' .. epoch .. ',' .. seq .. ',' .. unread .. ']'
    end
  end
  if #fresh > 0 then
    redis.call(PUBLISH, ARGV[3], '{"n":' .. ARGV[n + 1] .. ',"u":[' .. table.concat(fresh, ',') .. ']}')
  end
end
return out
