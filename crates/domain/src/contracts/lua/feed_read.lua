-- Marks items of one user's feed read, keeps the unread count exact, queues the marks for
-- PostgreSQL and tells the user's streams the new count, atomically.
--
-- The unread count is `seq - read_upto - |read set|`: every item above the `read_upto`
-- mark is unread unless its sequence number is in the read set (items read one by one).
--
-- KEYS[1]  the user's items   KEYS[2]  the user's state   KEYS[3]  the user's read set
-- KEYS[4]  the feed shard's queue
-- ARGV[1]  ids | up_to | all  ARGV[2]  the shard's pub/sub channel
-- ARGV[3]  the user as a JSON string
-- ARGV[4]  the queue message up to its marks: `{...` without the closing brace
-- ARGV[5..] the notification ids (ids), or the one id read up to (up_to)
-- Returns  {items newly read, unread count after}.
local st = redis.call('HMGET', KEYS[2], 'epoch', 'seq', 'read_upto', 'unread')
if not st[1] then
  return {0, 0}
end
local seq = tonumber(st[2] or '0')
local read_upto = tonumber(st[3] or '0')
local newly = 0
local marks
if ARGV[1] == 'ids' then
  local seqs = {}
  for i = 5, #ARGV do
    local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if s and tonumber(s) > read_upto and redis.call('SADD', KEYS[3], s) == 1 then
      newly = newly + 1
      seqs[#seqs + 1] = s
    end
  end
  marks = ',"seqs":[' .. table.concat(seqs, ',') .. ']'
else
  local target = seq
  if ARGV[1] == 'up_to' then
    target = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[5]) or '0')
  end
  if target > read_upto then
    local above = 0
    for _, m in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      if tonumber(m) <= target then
        redis.call('SREM', KEYS[3], m)
        above = above + 1
      end
    end
    newly = target - read_upto - above
    redis.call('HSET', KEYS[2], 'read_upto', target)
  end
  marks = ',"up_to":' .. target
end
local unread = tonumber(st[4] or '0')
if newly > 0 then
  unread = redis.call('HINCRBY', KEYS[2], 'unread', -newly)
  if unread < 0 then
    redis.call('HSET', KEYS[2], 'unread', 0)
    unread = 0
  end
  redis.call('LPUSH', KEYS[4], ARGV[4] .. ',"epoch":' .. st[1] .. marks .. '}')
  redis.call(PUBLISH, ARGV[2], '{"r":[' .. ARGV[3] .. ',' .. st[1] .. ',' .. seq .. ',' .. unread .. ']}')
end
return {newly, unread}
