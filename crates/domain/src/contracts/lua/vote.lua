-- Casts one vote: every check, the count, the queueing and the live notification in one
-- atomic step, so under any concurrency a user is counted at most once and no counted vote
-- misses the queue.
--
-- KEYS[1]  poll definition hash          KEYS[2]  poll tally hash
-- KEYS[3]  poll voters hash (user -> option)
-- KEYS[4]  the poll's shard queue        KEYS[5]  the shard's "restored" marker
-- KEYS[6]  idempotency key of this request (when ARGV[5] is "0", any key of the poll: unused)
-- ARGV[1]  option id    ARGV[2]  user id    ARGV[3]  now, epoch ms
-- ARGV[4]  the queue message up to its sequence number: everything before `N}`, where N is
--          the vote's sequence number (the service builds and escapes the JSON)
-- ARGV[5]  idempotency TTL in seconds, "0" when the request has no Idempotency-Key
-- ARGV[6]  pub/sub channel of the poll (payload: its state, epoch and sequence number)
-- ARGV[7]  the poll id as a JSON string (escaped)
-- Returns  {outcome, body}: outcome is accepted | replay | key_reused | duplicate | not_found
--          | restoring | closed | unknown_option; body is the JSON answer for accepted and
--          replay.
--
-- The idempotency key remembers whose vote it answered: its value is
-- `user NUL option NUL body` (ids never contain NUL). A retry of the same vote gets the
-- original answer; the key reused for another user or option is `key_reused`, so a 202
-- always means this very vote is counted. A value without NULs (written before the
-- fingerprint existed) is replayed as it was.
--
-- JSON is assembled from strings rather than with cjson: option ids are the service's own
-- ("o1", "o2", ...), everything client-supplied arrives escaped, and three cjson.encode
-- calls were most of the script's cost.
local use_idem = ARGV[5] ~= '0'
local fingerprint = ARGV[2] .. '\0' .. ARGV[1] .. '\0'
if use_idem then
  local prior = redis.call('GET', KEYS[6])
  if prior then
    if string.sub(prior, 1, #fingerprint) == fingerprint then
      return {'replay', string.sub(prior, #fingerprint + 1)}
    end
    if not string.find(prior, '\0', 1, true) then
      return {'replay', prior}
    end
    return {'key_reused', ''}
  end
end
local def = redis.call('HMGET', KEYS[1], 'closed', 'closes_at_ms', 'epoch')
if not def[1] then
  -- Without the marker Redis may have lost this poll: say "retry", never a wrong 404.
  if redis.call('EXISTS', KEYS[5]) == 0 then
    return {'restoring', ''}
  end
  return {'not_found', ''}
end
if def[1] == '1' or (def[2] and def[2] ~= '' and tonumber(ARGV[3]) >= tonumber(def[2])) then
  return {'closed', ''}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return {'unknown_option', ''}
end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1]) == 0 then
  return {'duplicate', ''}
end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local total = redis.call('HINCRBY', KEYS[1], 'total', 1)
redis.call('LPUSH', KEYS[4], ARGV[4] .. seq .. '}')
local flat = redis.call('HGETALL', KEYS[2])
local parts = {}
for i = 1, #flat, 2 do
  parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1]
end
local tally = '{' .. table.concat(parts, ',') .. '}'
redis.call('PUBLISH', ARGV[6], '{"poll_id":' .. ARGV[7] .. ',"epoch":' .. (def[3] or '0') .. ',"seq":' .. seq .. ',"tally":' .. tally
  .. ',"total":' .. total .. ',"closed":false}')
local body = '{"status":"accepted","seq":' .. seq .. ',"tally":' .. tally .. ',"total":' .. total .. '}'
if use_idem then
  redis.call('SET', KEYS[6], fingerprint .. body, 'EX', tonumber(ARGV[5]))
end
return {'accepted', body}
