-- Takes dead letters out of a dead-letter list and, for a retry, puts what they carried
-- back on the queue, each in one step: a letter is either still dead or queued again,
-- never both, never neither.
--
-- KEYS[1]  the dead-letter list   KEYS[2]  the queue (unused for a purge)
-- ARGV[1..] groups of 2: the dead letter exactly as listed, the item to queue ("" to
--          drop it: a purge)
-- Returns  how many letters were taken out (a letter no longer there is skipped).
local moved = 0
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    moved = moved + 1
    if ARGV[i + 1] ~= '' then
      redis.call('LPUSH', KEYS[2], ARGV[i + 1])
    end
  end
end
return moved
