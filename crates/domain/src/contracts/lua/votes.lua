-- Casts or moves the votes of one vote shard's polls, in order, each exactly as if it were
-- cast alone: every check, the count, the queueing and the live notification in one
-- atomic step, so under any concurrency a user is counted at most once, a moved vote is
-- uncounted and recounted together, and no counted vote misses the queue.
--
-- Concurrent requests' votes come in one call (ingest-api coalesces them): Redis then
-- reads each poll once, writes it once, queues every vote in one LPUSH and publishes each
-- poll's final state once, where a call per vote did all of it per vote. A vote still gets
-- its own answer with the tally right after it.
--
-- KEYS[1]  the shard's queue              KEYS[2]  the shard's "restored" marker
-- then three keys per poll the votes name (poll j at KEYS[3 + 3(j-1)] ..): its definition
--   hash, tally hash and voters hash (user -> the options of their vote, sorted,
--   comma-separated);
-- then the idempotency key of each vote that has one, in the votes' order.
-- ARGV[1]  now, epoch ms                   ARGV[2]  the number of polls, P
-- then two arguments per poll (poll j at ARGV[3 + 2(j-1)] ..): its pub/sub channel (payload:
--   its state, epoch and sequence number) and its id as a JSON string (escaped);
-- then six arguments per vote (from ARGV[3 + 2P], six apart):
--   the poll's number j;
--   the chosen option ids, distinct, sorted, comma-separated;
--   user id;
--   the queue message up to its sequence number: everything before `N}`, where N is the
--     vote's sequence number (the service builds and escapes the JSON);
--   idempotency TTL in seconds, "0" when the request has no Idempotency-Key;
--   what the voter token proves: valid | missing | invalid (the service checks it)
-- Returns  {outcome, body, outcome, body, ...}, one pair per vote in order. outcome:
--          accepted | unchanged | replay | key_reused | duplicate | not_found | restoring |
--          closed | unknown_option | choice_count | unsigned | bad_signature. body: the JSON
--          answer for accepted, unchanged and replay; "min,max" for choice_count.
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
-- Nothing is written before every vote is decided (the writes come last, together), so a
-- failing call changes nothing.
--
-- JSON is assembled from strings rather than with cjson: option ids are the service's own
-- ("o1", "o2", ...), everything client-supplied arrives escaped, and cjson.encode calls
-- were most of a vote's cost. Numbers are turned into text once per change, mostly by
-- changing the last digit of the text before (Lua formats numbers with sprintf, the next
-- largest cost), and each poll's tally text is kept between votes.
local now = tonumber(ARGV[1])
local poll_count = tonumber(ARGV[2])
local polls = {}
local touched = {}
local remembered = {}
local remembered_order = {}
local queued = {}
local replies = {}
local shard_restored

-- The users voting on each poll of the call.
local voters_of = {}
for a = 3 + 2 * poll_count, #ARGV, 6 do
  local j = tonumber(ARGV[a])
  local users = voters_of[j]
  if not users then
    users = {}
    voters_of[j] = users
  end
  users[#users + 1] = ARGV[a + 2]
end

local function poll_of(j)
  local p = polls[j]
  if p then
    return p
  end
  local k = 3 + 3 * (j - 1)
  local def_key = KEYS[k]
  local def = redis.call('HMGET', def_key, 'closed', 'closes_at_ms', 'epoch', 'min_choices',
    'max_choices', 'results', 'allow_change', 'voters', 'seq', 'total')
  p = {def_key = def_key, tally_key = KEYS[k + 1], voters_key = KEYS[k + 2], def = def,
    channel = ARGV[3 + 2 * (j - 1)], poll_id_json = ARGV[4 + 2 * (j - 1)],
    voters = {}, moved = {}, moved_order = {}, changed = false}
  if def[1] then
    -- The options in the tally hash's order; each option's count, as a number and as
    -- its `"id":count` text.
    p.options = {}
    p.counts = {}
    p.count_texts = {}
    p.parts = {}
    p.slot = {}
    local flat = redis.call('HGETALL', p.tally_key)
    for i = 1, #flat, 2 do
      local n = #p.options + 1
      p.options[n] = flat[i]
      p.counts[flat[i]] = tonumber(flat[i + 1])
      p.count_texts[flat[i]] = flat[i + 1]
      p.parts[n] = '"' .. flat[i] .. '":' .. flat[i + 1]
      p.slot[flat[i]] = n
    end
    p.seq_text = def[9] or '0'
    p.seq = tonumber(p.seq_text) or 0
    p.total_text = def[10] or '0'
    p.total = tonumber(p.total_text) or 0
    p.results = def[6] or 'always'
    p.min_choices = tonumber(def[4] or '1') or 1
    p.max_choices = tonumber(def[5] or '1') or 1
    -- Every voter of the call at once: whether each voted before, and for what.
    local users = voters_of[j]
    local previous = redis.call('HMGET', p.voters_key, unpack(users))
    for i, user in ipairs(users) do
      p.voters[user] = previous[i]
    end
  end
  polls[j] = p
  return p
end

-- The text of a number one more than the one `text` spells, or nil: most of the time only
-- its last digit changes, which is far cheaper than Lua formatting a number (sprintf).
local function next_text(text)
  local last = string.byte(text, -1)
  if last and last >= 48 and last < 57 then
    return string.sub(text, 1, -2) .. string.char(last + 1)
  end
  return nil
end

local function count(p, option, by)
  local n = p.counts[option] + by
  local text = by == 1 and next_text(p.count_texts[option]) or tostring(n)
  p.counts[option] = n
  p.count_texts[option] = text
  p.parts[p.slot[option]] = '"' .. option .. '":' .. text
  p.tally_json = nil
end

local function tally_json(p)
  if not p.tally_json then
    p.tally_json = '{' .. table.concat(p.parts, ',') .. '}'
  end
  return p.tally_json
end

local function answer(p, status)
  if p.results == 'after_close' then
    return '{"status":"' .. status .. '","seq":' .. p.seq_text .. ',"total":' .. p.total_text .. ',"results":"hidden"}'
  end
  local mode = ''
  if p.results == 'after_vote' then
    mode = ',"results":"after_vote"'
  end
  return '{"status":"' .. status .. '","seq":' .. p.seq_text .. ',"tally":' .. tally_json(p) .. ',"total":' .. p.total_text .. mode .. '}'
end

local idem_cursor = 3 + 3 * poll_count

local function cast(a)
  local choice_list, user, ttl = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]
  local use_idem = ttl ~= '0'
  local idem_key, fingerprint
  if use_idem then
    idem_key = KEYS[idem_cursor]
    idem_cursor = idem_cursor + 1
    fingerprint = user .. '\0' .. choice_list .. '\0'
    local prior = remembered[idem_key]
    if prior then
      prior = prior[1]
    else
      prior = redis.call('GET', idem_key)
    end
    if prior then
      if string.sub(prior, 1, #fingerprint) == fingerprint then
        return 'replay', string.sub(prior, #fingerprint + 1)
      end
      if not string.find(prior, '\0', 1, true) then
        return 'replay', prior
      end
      return 'key_reused', ''
    end
  end
  local function remember(body)
    if use_idem then
      if not remembered[idem_key] then
        remembered_order[#remembered_order + 1] = idem_key
      end
      remembered[idem_key] = {fingerprint .. body, ttl}
    end
  end
  local p = poll_of(tonumber(ARGV[a]))
  local def = p.def
  if not def[1] then
    -- Without the marker Redis may have lost this poll: say "retry", never a wrong 404.
    if shard_restored == nil then
      shard_restored = redis.call('EXISTS', KEYS[2]) == 1
    end
    if not shard_restored then
      return 'restoring', ''
    end
    return 'not_found', ''
  end
  if def[1] == '1' or (def[2] and def[2] ~= '' and now >= tonumber(def[2])) then
    return 'closed', ''
  end
  local proof = ARGV[a + 5]
  if def[8] == 'signed' and proof ~= 'valid' then
    if proof == 'missing' then
      return 'unsigned', ''
    end
    return 'bad_signature', ''
  end
  local choices
  if string.find(choice_list, ',', 1, true) then
    choices = {}
    for option in string.gmatch(choice_list, '[^,]+') do
      choices[#choices + 1] = option
    end
  else
    choices = {choice_list}
  end
  if #choices < p.min_choices or #choices > p.max_choices then
    return 'choice_count', p.min_choices .. ',' .. p.max_choices
  end
  for _, option in ipairs(choices) do
    if not p.counts[option] then
      return 'unknown_option', ''
    end
  end
  local previous = p.voters[user]
  if previous then
    if def[7] ~= '1' then
      return 'duplicate', ''
    end
    if previous == choice_list then
      local body = answer(p, 'unchanged')
      remember(body)
      return 'unchanged', body
    end
    for option in string.gmatch(previous, '[^,]+') do
      count(p, option, -1)
    end
  else
    p.total = p.total + 1
    p.total_text = next_text(p.total_text) or tostring(p.total)
  end
  p.voters[user] = choice_list
  if not p.moved[user] then
    p.moved[user] = true
    p.moved_order[#p.moved_order + 1] = user
  end
  for _, option in ipairs(choices) do
    count(p, option, 1)
  end
  p.seq = p.seq + 1
  p.seq_text = next_text(p.seq_text) or tostring(p.seq)
  if not p.changed then
    p.changed = true
    touched[#touched + 1] = p
  end
  queued[#queued + 1] = ARGV[a + 3] .. p.seq_text .. '}'
  local body = answer(p, 'accepted')
  remember(body)
  return 'accepted', body
end

for a = 3 + 2 * poll_count, #ARGV, 6 do
  local outcome, body = cast(a)
  replies[#replies + 1] = outcome
  replies[#replies + 1] = body
end

-- Every vote is decided: now the writes.
for _, p in ipairs(touched) do
  local voters = {}
  for _, user in ipairs(p.moved_order) do
    voters[#voters + 1] = user
    voters[#voters + 1] = p.voters[user]
  end
  redis.call('HSET', p.voters_key, unpack(voters))
  local counts = {}
  for _, option in ipairs(p.options) do
    counts[#counts + 1] = option
    counts[#counts + 1] = p.count_texts[option]
  end
  redis.call('HSET', p.tally_key, unpack(counts))
  redis.call('HSET', p.def_key, 'seq', p.seq_text, 'total', p.total_text)
end
if #queued > 0 then
  redis.call('LPUSH', KEYS[1], unpack(queued))
end
for _, p in ipairs(touched) do
  redis.call(PUBLISH, p.channel, '{"poll_id":' .. p.poll_id_json .. ',"epoch":' .. (p.def[3] or '0')
    .. ',"seq":' .. p.seq_text .. ',"tally":' .. tally_json(p) .. ',"total":' .. p.total_text
    .. ',"closed":false,"results":"' .. p.results .. '"}')
end
for _, key in ipairs(remembered_order) do
  local value = remembered[key]
  redis.call('SET', key, value[1], 'EX', value[2])
end
return replies
