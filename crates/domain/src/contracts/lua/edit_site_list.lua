-- Adds an item to, or removes one from, a list a site record holds as JSON (its goals, its
-- funnels), and queues the site as it is after the change for PostgreSQL, atomically: two
-- admins adding goals at once both land, and a goal cannot be removed while a funnel
-- names it. The queued change is the site registry's (see put_record.lua).
--
-- KEYS[1]  the site's hash   KEYS[2]  the registry's version   KEYS[3]  the "restored" marker
-- KEYS[4]  the registry's queue
-- ARGV[1]  goals | funnels    ARGV[2]  add | remove    ARGV[3]  now, epoch ms
-- ARGV[4]  add: the item as JSON; remove: its id
-- ARGV[5]  most items the list may hold
-- Returns  {"restoring"} | {"missing"} | {"full"} | {"exists"} | {"not_found"} |
--          {"unknown_goal"} | {"in_use", funnel name} | {"ok", field, value, ...}
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {'restoring'}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local field, op = ARGV[1], ARGV[2]
local id_field = field == 'goals' and 'goal_id' or 'funnel_id'
local name_field = field == 'goals' and 'display_name' or 'name'
local function list_of(name)
  local text = redis.call('HGET', KEYS[1], name)
  if not text or text == '' then return {} end
  return cjson.decode(text)
end
-- cjson writes an empty table as {}: an empty list is spelled out.
local function encode(list)
  if #list == 0 then return '[]' end
  return cjson.encode(list)
end
local list = list_of(field)
if op == 'add' then
  local item = cjson.decode(ARGV[4])
  if #list >= tonumber(ARGV[5]) then
    return {'full'}
  end
  for _, other in ipairs(list) do
    if other[id_field] == item[id_field] or other[name_field] == item[name_field] then
      return {'exists'}
    end
  end
  if field == 'funnels' then
    local known = {}
    for _, goal in ipairs(list_of('goals')) do known[goal.goal_id] = true end
    for _, step in ipairs(item.steps) do
      if not known[step] then return {'unknown_goal'} end
    end
  end
  list[#list + 1] = item
else
  local at
  for i, other in ipairs(list) do
    if other[id_field] == ARGV[4] then at = i end
  end
  if not at then
    return {'not_found'}
  end
  if field == 'goals' then
    for _, funnel in ipairs(list_of('funnels')) do
      for _, step in ipairs(funnel.steps) do
        if step == ARGV[4] then return {'in_use', funnel.name} end
      end
    end
  end
  table.remove(list, at)
end
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local version = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now_us)
version = string.format('%.0f', version)
redis.call('SET', KEYS[2], version)
redis.call('HSET', KEYS[1], field, encode(list), 'version', version, 'updated_at_ms', ARGV[3])
local record = redis.call('HGETALL', KEYS[1])
local message = {deleted = '0'}
local reply = {'ok'}
for i = 1, #record, 2 do
  message[record[i]] = record[i + 1]
  reply[#reply + 1] = record[i]
  reply[#reply + 1] = record[i + 1]
end
redis.call('LPUSH', KEYS[4], cjson.encode(message))
return reply
