-- Cluster membership: one hash, instance id -> "<written ms> <record>", written times
-- from the Redis clock (instances' clocks do not matter).
-- KEYS[1] the hash
-- ARGV[1] "announce" | "read" | "leave"; ARGV[2] ttl ms; ARGV[3] id; ARGV[4] record
-- announce and read return {age ms, record, age ms, record, ...} of the live records,
-- dropping those older than the ttl.
local op = ARGV[1]
if op == 'leave' then
  redis.call('HDEL', KEYS[1], ARGV[3])
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if op == 'announce' then
  redis.call('HSET', KEYS[1], ARGV[3], now .. ' ' .. ARGV[4])
  -- The whole hash goes when every instance is gone.
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
end
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local value = all[i + 1]
  local space = string.find(value, ' ', 1, true)
  local written = space and tonumber(string.sub(value, 1, space - 1))
  if not written or now - written > ttl then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = tostring(now - written)
    out[#out + 1] = string.sub(value, space + 1)
  end
end
return out
