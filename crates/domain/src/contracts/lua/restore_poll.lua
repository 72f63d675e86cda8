-- The last step of restoring a poll from PostgreSQL after Redis lost it: writes the
-- definition and tally, unless the poll exists. The voters hash is written before this
-- (in slices), and votes are refused while the definition is missing, so no vote is
-- counted against a half-restored poll.
--
-- KEYS[1]  poll definition hash          KEYS[2]  poll tally hash
-- ARGV[1]  question   ARGV[2]  options JSON   ARGV[3]  closes_at epoch ms or ""
-- ARGV[4]  "1" when closed   ARGV[5]  sequence number   ARGV[6]  total votes
-- ARGV[7]  tally, JSON {"option id": votes}
-- ARGV[8]  pub/sub channel of the poll   ARGV[9]  the poll id as a JSON string
-- ARGV[10] the poll's new epoch (the restore's time, epoch ms)
-- ARGV[11..] the poll's settings: field, value, ... (see votes.lua)
-- Returns  1 when restored, 0 when the poll already exists (nothing done).
--
-- The restored state is published with a new epoch: its sequence number may be lower than
-- what browsers saw (Redis lost votes PostgreSQL never had), and the epoch says so rather
-- than leaving watchers to infer it.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for option, votes in pairs(cjson.decode(ARGV[7])) do
  redis.call('HSET', KEYS[2], option, votes)
end
redis.call('HSET', KEYS[1], 'question', ARGV[1], 'options', ARGV[2], 'closes_at_ms', ARGV[3],
  'closed', ARGV[4], 'seq', ARGV[5], 'total', ARGV[6], 'epoch', ARGV[10])
local results = 'always'
for i = 11, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  if ARGV[i] == 'results' then
    results = ARGV[i + 1]
  end
end
local closed = 'false'
if ARGV[4] == '1' then
  closed = 'true'
end
redis.call(PUBLISH, ARGV[8], '{"poll_id":' .. ARGV[9] .. ',"epoch":' .. ARGV[10] .. ',"seq":' .. ARGV[5] .. ',"tally":' .. ARGV[7]
  .. ',"total":' .. ARGV[6] .. ',"closed":' .. closed .. ',"results":"' .. results .. '"}')
return 1
