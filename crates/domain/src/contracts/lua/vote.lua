-- Casts or moves one vote: every check, the count, the queueing and the live notification
-- in one atomic step, so under any concurrency a user is counted at most once, a moved vote
-- is uncounted and recounted together, and no counted vote misses the queue.
--
-- KEYS[1]  poll definition hash          KEYS[2]  poll tally hash
-- KEYS[3]  poll voters hash (user -> the options of their vote, sorted, comma-separated)
-- KEYS[4]  the poll's shard queue        KEYS[5]  the shard's "restored" marker
-- KEYS[6]  idempotency key of this request (when ARGV[5] is "0", any key of the poll: unused)
-- ARGV[1]  the chosen option ids, distinct, sorted, comma-separated
-- ARGV[2]  user id    ARGV[3]  now, epoch ms
-- ARGV[4]  the queue message up to its sequence number: everything before `N}`, where N is
--          the vote's sequence number (the service builds and escapes the JSON)
-- ARGV[5]  idempotency TTL in seconds, "0" when the request has no Idempotency-Key
-- ARGV[6]  pub/sub channel of the poll (payload: its state, epoch and sequence number)
-- ARGV[7]  the poll id as a JSON string (escaped)
-- ARGV[8]  what the voter token proves: valid | missing | invalid (the service checks it)
-- Returns  {outcome, body}. outcome: accepted | unchanged | replay | key_reused | duplicate
--          | not_found | restoring | closed | unknown_option | choice_count | unsigned |
--          bad_signature. body: the JSON answer for accepted, unchanged and replay;
--          "min,max" for choice_count.
--
-- The poll's settings live in its definition hash (absent fields: the defaults of a poll
-- made before settings existed): min_choices, max_choices, results (always | after_vote |
-- after_close), allow_change ("1"), voters (open | signed). The answer carries the tally
-- only when the voter may see it (not for after_close before the close); the published
-- state always does, with `results`, and the gateway hides it from whoever may not see it.
--
-- `total` counts voters (one per user), not choices: the tally of a multi-choice poll sums
-- to more.
--
-- The idempotency key remembers whose vote it answered: its value is
-- `user NUL options NUL body` (ids never contain NUL). A retry of the same vote gets the
-- original answer; the key reused for another user or choice is `key_reused`, so a 202
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
local def = redis.call('HMGET', KEYS[1], 'closed', 'closes_at_ms', 'epoch', 'min_choices',
  'max_choices', 'results', 'allow_change', 'voters')
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
if def[8] == 'signed' and ARGV[8] ~= 'valid' then
  if ARGV[8] == 'missing' then
    return {'unsigned', ''}
  end
  return {'bad_signature', ''}
end
local choices = {}
for option in string.gmatch(ARGV[1], '[^,]+') do
  choices[#choices + 1] = option
end
local min_choices = tonumber(def[4] or '1') or 1
local max_choices = tonumber(def[5] or '1') or 1
if #choices < min_choices or #choices > max_choices then
  return {'choice_count', min_choices .. ',' .. max_choices}
end
for _, option in ipairs(choices) do
  if redis.call('HEXISTS', KEYS[2], option) == 0 then
    return {'unknown_option', ''}
  end
end
local results = def[6] or 'always'
local function state_json()
  local flat = redis.call('HGETALL', KEYS[2])
  local parts = {}
  for i = 1, #flat, 2 do
    parts[#parts + 1] = '"' .. flat[i] .. '":' .. flat[i + 1]
  end
  return '{' .. table.concat(parts, ',') .. '}'
end
local function answer(status, seq, total, tally)
  if results == 'after_close' then
    return '{"status":"' .. status .. '","seq":' .. seq .. ',"total":' .. total .. ',"results":"hidden"}'
  end
  local mode = ''
  if results == 'after_vote' then
    mode = ',"results":"after_vote"'
  end
  return '{"status":"' .. status .. '","seq":' .. seq .. ',"tally":' .. tally .. ',"total":' .. total .. mode .. '}'
end
local function remember(body)
  if use_idem then
    redis.call('SET', KEYS[6], fingerprint .. body, 'EX', tonumber(ARGV[5]))
  end
end
local previous = redis.call('HGET', KEYS[3], ARGV[2])
local total
if previous then
  if def[7] ~= '1' then
    return {'duplicate', ''}
  end
  if previous == ARGV[1] then
    local now = redis.call('HMGET', KEYS[1], 'seq', 'total')
    local body = answer('unchanged', now[1], now[2], state_json())
    remember(body)
    return {'unchanged', body}
  end
  for option in string.gmatch(previous, '[^,]+') do
    redis.call('HINCRBY', KEYS[2], option, -1)
  end
  total = tonumber(redis.call('HGET', KEYS[1], 'total'))
else
  total = redis.call('HINCRBY', KEYS[1], 'total', 1)
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
for _, option in ipairs(choices) do
  redis.call('HINCRBY', KEYS[2], option, 1)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('LPUSH', KEYS[4], ARGV[4] .. seq .. '}')
local tally = state_json()
redis.call('PUBLISH', ARGV[6], '{"poll_id":' .. ARGV[7] .. ',"epoch":' .. (def[3] or '0') .. ',"seq":' .. seq
  .. ',"tally":' .. tally .. ',"total":' .. total .. ',"closed":false,"results":"' .. results .. '"}')
local body = answer('accepted', seq, total, tally)
remember(body)
return {'accepted', body}
