"""The Lua scripts behind the Redis transports: every move of a message is one of these.

A Redis script is atomic, but an error inside it does not roll back the writes before it. So each
script looks at everything that could fail (key types, ownership) before it writes anything, and
answers with a value instead of raising: a copy is made and the original removed together, or
nothing happens at all.

The list scripts build the names of other consumers' keys from a prefix, so they need a single
Redis server (not a cluster), like kombu's own Redis transport.
"""

from __future__ import annotations

#: The envelope field, first in the JSON object, in which recovery counts a list message's
#: deliveries to consumers that died holding it.
DELIVERY_COUNT_FIELD = "x-delivery-count"

_RECOVER_FUNCTION = """
local function counted(entry)
  -- Rewrite only what is surely a non-empty JSON object; anything else moves unchanged.
  if string.sub(entry, 1, 1) ~= '{' then return entry end
  local ok, decoded = pcall(cjson.decode, entry)
  if not ok or type(decoded) ~= 'table' or next(decoded) == nil then return entry end
  local count = tonumber(decoded['x-delivery-count']) or 0
  local rest = entry
  local s, e = string.find(entry, '^{"x%-delivery%-count":%d+,')
  if s then rest = '{' .. string.sub(entry, e + 1) end
  return '{"x-delivery-count":' .. string.format('%d', count + 1) .. ',' .. string.sub(rest, 2)
end

-- Back to the consuming end of the queue in the order they were fetched (the processing list
-- holds the newest fetched at its head).
local function recover(processing, queue, count)
  local moved = 0
  while true do
    local entry = redis.call('LPOP', processing)
    if not entry then return moved end
    if count then entry = counted(entry) end
    redis.call('RPUSH', queue, entry)
    moved = moved + 1
  end
end
"""

#: KEYS: alive, consumers; ARGV: consumer id, alive ttl in ms.
#: Returns 1 if we were still registered, 0 if a sweep had presumed us dead (or on first call).
LIST_REGISTER = """
local member = redis.call('SISMEMBER', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return member
"""

#: KEYS: processing, queue; ARGV: "count" when the entries may have been in a handler.
LIST_RECOVER_OWN = (
    _RECOVER_FUNCTION
    + """
return recover(KEYS[1], KEYS[2], ARGV[1] == 'count')
"""
)

#: KEYS: consumers, queue; ARGV: key prefix (``consumer-host:<queue>:``), our consumer id.
#: Every registered consumer whose alive key expired loses its processing list to the queue
#: (with a delivery counted) and its membership. Returns the number of messages moved.
LIST_SWEEP = (
    _RECOVER_FUNCTION
    + """
local moved = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if member ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. member) == 0 then
    moved = moved + recover(ARGV[1] .. 'processing:' .. member, KEYS[2], true)
    redis.call('SREM', KEYS[1], member)
  end
end
return moved
"""
)

#: KEYS: processing, target (list or sorted set), queue;
#: ARGV: original, copy, target type ("list" or "zset"), score (zset only).
#: Returns 1 (moved), 0 (the original is no longer ours: nothing done), or the wrong type found
#: at the target (nothing copied; the original back at the queue's head), or ``queue <type>``
#: when the queue itself is not a list (nothing done at all).
LIST_SETTLE_COPY = """
local queue_type = redis.call('TYPE', KEYS[3]).ok
if queue_type ~= 'none' and queue_type ~= 'list' then return 'queue ' .. queue_type end
local found = redis.call('TYPE', KEYS[2]).ok
if found ~= 'none' and found ~= ARGV[3] then
  if redis.call('LREM', KEYS[1], -1, ARGV[1]) > 0 then redis.call('RPUSH', KEYS[3], ARGV[1]) end
  return found
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'zset' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
else
  redis.call('LPUSH', KEYS[2], ARGV[2])
end
return 1
"""

#: KEYS: processing, queue; ARGV: originals, the first fetched last. Those still ours go back to
#: the queue's consuming end, the first fetched to be consumed first. Returns how many moved.
LIST_REQUEUE = """
local moved = 0
for _, entry in ipairs(ARGV) do
  if redis.call('LREM', KEYS[1], -1, entry) > 0 then
    redis.call('RPUSH', KEYS[2], entry)
    moved = moved + 1
  end
end
return moved
"""

#: KEYS: delayed set, queue; ARGV: now (wall seconds), limit.
#: Returns the due time of the earliest retry still waiting, or false when none waits.
LIST_PROMOTE_DUE = """
-- A delayed key of another type holds no retries of ours (copies to it are refused).
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then return false end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, entry in ipairs(due) do
  redis.call('RPUSH', KEYS[2], entry)
  redis.call('ZREM', KEYS[1], entry)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return next_due[2] or false
"""

#: KEYS: delayed set, stream; ARGV: now, limit. Each member names a hash holding the entry's
#: fields (binary-safe), which goes back onto the stream as a new entry.
STREAM_PROMOTE_DUE = """
-- A delayed key of another type holds no retries of ours (copies to it are refused).
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then return false end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(due) do
  local fields = redis.call('HGETALL', key)
  if #fields > 0 then redis.call('XADD', KEYS[2], '*', unpack(fields)) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], key)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return next_due[2] or false
"""

#: KEYS: stream, target (stream or sorted set), held (a new hash key, zset only);
#: ARGV: group, consumer, entry id, target type ("stream" or "zset"), score, field, value, ...
#: Returns 1 (copied, original acked), 0 (the entry is not pending on us: nothing done), or the
#: name of the wrong type found at the target (nothing done; the entry stays pending).
STREAM_SETTLE_COPY = """
local found = redis.call('TYPE', KEYS[2]).ok
if found ~= 'none' and found ~= ARGV[4] then return found end
if ARGV[4] == 'zset' then
  local held = redis.call('TYPE', KEYS[3]).ok
  if held ~= 'none' then return held end
end
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return 0 end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[4] == 'zset' then
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[2], ARGV[5], KEYS[3])
else
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
