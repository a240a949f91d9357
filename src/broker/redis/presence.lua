-- The presence set of one room (see docs/cluster.md, "Presence"). Every key carries the
-- room's hash tag, so in a Redis Cluster they share one slot.
--
-- KEYS[1] entries  hash        connection id -> entry (JSON with `user`)
-- KEYS[2] expiry   sorted set  connection id -> expiry time (ms, Redis clock)
-- KEYS[3] users    hash        user -> number of its entries
-- KEYS[4] version  string      changes with every change of the set
--
-- ARGV[1] is the operation:
--   add ttl_ms conn user json [conn user json ...]   insert or re-write; each lives ttl_ms
--   remove conn [conn ...]
--   read known        -> {version} when it equals `known`, else {version, json...}
--   stats             -> {entries, users}
-- Every operation first drops expired entries (at most 1000 per call), so no read ever
-- returns an entry past its expiry.

local entries, expiry, users, version = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function drop(conn)
  redis.call('ZREM', expiry, conn)
  local json = redis.call('HGET', entries, conn)
  if not json then
    return false
  end
  redis.call('HDEL', entries, conn)
  local user = cjson.decode(json).user
  if redis.call('HINCRBY', users, user, -1) <= 0 then
    redis.call('HDEL', users, user)
  end
  return true
end

local function bump()
  if redis.call('EXISTS', version) == 0 then
    -- A new incarnation of the set (first use, or Redis lost it) counts on from the
    -- clock, so that a reader never sees a version it saw in an earlier incarnation.
    redis.call('SET', version, string.format('%.0f', now * 1000))
  end
  redis.call('INCR', version)
end

local changed = false
local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)
for _, conn in ipairs(expired) do
  if drop(conn) then
    changed = true
  end
end

local op = ARGV[1]
if op == 'add' then
  local ttl = tonumber(ARGV[2])
  for i = 3, #ARGV, 3 do
    local conn, user, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local old = redis.call('HGET', entries, conn)
    if old ~= json then
      if old then
        drop(conn)
      end
      redis.call('HSET', entries, conn, json)
      redis.call('HINCRBY', users, user, 1)
      changed = true
    end
    redis.call('ZADD', expiry, now + ttl, conn)
  end
  if changed then
    bump()
  end
  for _, key in ipairs(KEYS) do
    redis.call('PEXPIRE', key, ttl)
  end
  return 1
elseif op == 'remove' then
  for i = 2, #ARGV do
    if drop(ARGV[i]) then
      changed = true
    end
  end
  if changed then
    bump()
  end
  return 1
elseif op == 'read' then
  if changed then
    bump()
  end
  local v = redis.call('GET', version) or '0'
  if v == ARGV[2] then
    return {v}
  end
  local reply = redis.call('HVALS', entries)
  table.insert(reply, 1, v)
  return reply
elseif op == 'stats' then
  if changed then
    bump()
  end
  return {redis.call('HLEN', entries), redis.call('HLEN', users)}
end
return redis.error_reply('unknown presence operation')
