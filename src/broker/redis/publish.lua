-- A Redis function library (loaded with FUNCTION LOAD under a name derived from this
-- text, so instances of different versions never replace each other's code). Its one
-- function sequences one publication of a room, atomically:
--   idempotency check -> epoch check -> next seq -> append to the replay buffer ->
--   fan out on the room's channel -> remember the idempotency key.
-- Nothing is fanned out that is not stored, and nothing is sequenced twice.
--
-- A room's epoch is bound to the Redis process that holds it (its run_id): when the
-- data comes from another process (a restart with or without persistence, a restore of
-- an older snapshot, a failover to a replica) the room starts a new epoch, because the
-- stored sequence may be behind what clients have already seen.
--
-- The run id is read with INFO once per process, not once per publish (INFO formats
-- the whole section: it used to be a fifth of the function's cost). It is kept in a
-- local of the library, that is in the memory of the Lua interpreter that runs it,
-- which no snapshot, AOF or replica carries: a restarted, restored or promoted process
-- starts with a freshly loaded library and reads its own run id again. A value in the
-- keyspace could not do this: it is persisted with everything else, so a restore of an
-- older snapshot would bring back the old process's marker with the old sequence.
--
-- Idempotency keys of a room live in one hash (key -> "epoch seq time expires") and one
-- sorted set (key by expiry), so that each key has its own lifetime and the room keeps
-- at most a bounded number: past the bound the key closest to expiry is forgotten.
-- Two fields of the hash are not keys (every key the server makes starts with a kind
-- and a colon, "client:" or "outbox:", so they cannot collide): COUNT, the number of
-- keys in the sorted set as of the last publish, which spares a ZCARD on every publish
-- (it is read again with ZCARD every TRIM_EVERY publishes and whenever the room is
-- within TRIM_EVERY keys of its bound, so the bound holds at every publish), and
-- EXPIRES, when the hash and the set expire, which spares a PTTL on every publish
-- (both are extended past the newest key's expiry by an eighth of its lifetime at a
-- time, so most publishes need no PEXPIRE).
--
-- The replay stream and the meta hash are not given their expiry at every publish
-- either. Both are set with PEXPIREAT to now + their lifetime + an eighth of the
-- stream's lifetime, and one field of the meta hash, RENEW, holds when that is due
-- again (now + that eighth) followed by the two lifetimes it was done with. The HMGET
-- of the meta hash every publish does reads it; the expiries are set again (HSET of
-- RENEW, two PEXPIREATs) only when that time has passed, the field is missing, or the
-- lifetimes given now are not those (the configuration changed). So each key lives at
-- least its lifetime after the last publish and at most an eighth of the stream's
-- lifetime longer (reads skip entries past the age bound, history.lua). A new epoch
-- (DEL of the stream) sets both; the other scripts that start an epoch store 0 as
-- RENEW. A stream gone before its time (deleted by another version's epoch reset,
-- evicted, deleted by hand) is seen by XADD ... NOMKSTREAM, which then adds nothing:
-- the entry is added again without it and the expiries set.
--
-- KEYS[1] meta hash (epoch, seq, rid, RENEW)   KEYS[2] replay stream
-- KEYS[3] idempotency hash, KEYS[4] idempotency expiry set (both only with a key)
-- ARGV[1] channel   ARGV[2] PUBLISH or SPUBLISH   ARGV[3] epoch to use if a new one is needed
-- ARGV[4] body (MessagePack)   ARGV[5] buffer length   ARGV[6] buffer age (ms)
-- ARGV[7] epoch lifetime when idle (ms)   ARGV[8] how long to remember the key (ms)
-- ARGV[9] the idempotency key   ARGV[10] most keys remembered per room
-- Returns {0, epoch, seq, time} for a new publication, {1, epoch, seq, time} for a repeat.

-- Every redis.call costs about a microsecond on top of the command, so work that can
-- wait is done every TRIM_EVERY publishes of a room, TRIM_EVERY items at a time: dropping
-- replay entries past the age bound (reads skip expired entries; MAXLEN bounds the count
-- meanwhile) and forgetting expired idempotency keys (the check skips them; the bound on
-- keys per room evicts the earliest-expiring first).
local TRIM_EVERY = 16
local COUNT, EXPIRES = '#count', '#expires'
local RENEW = 'renew'

local run_id

-- Numbers of the arguments that carry settings (lifetimes, bounds): a few texts, parsed
-- once per process rather than at every publish (tonumber is glibc's strtod, about a
-- thousand instructions even for "1000"; for the same reason stored times are compared
-- as text where they can be).
local settings = {}
local function setting(text)
  local n = settings[text]
  if not n then
    n = tonumber(text)
    settings[text] = n
  end
  return n
end

-- The idempotency record of `key`: {original ack or nil, keys counted, expiry of the set}.
local function check_key(idem, key, now)
  local found = redis.call('HMGET', idem, key, COUNT, EXPIRES)
  local original = found[1]
  if original then
    local epoch, seq, time, expires = string.match(original, '^(%S+) (%d+) (%d+) (%d+)$')
    if tonumber(expires) > now then
      return {1, epoch, tonumber(seq), tonumber(time)}, found
    end
  end
  return nil, found
end

-- Remembers `key` for `keep` ms as the publication (epoch, seq, now), keeping at most
-- `max` keys in the room; `found` is what check_key read.
local function remember_key(idem, idemx, key, record, now, keep, max, periodic, found)
  local expires = now + keep
  local expires_text = string.format('%d', expires)
  if periodic then
    -- Forget expired keys (up to TRIM_EVERY of them; the check skips the rest).
    local expired = redis.call('ZRANGEBYSCORE', idemx, '-inf', now, 'LIMIT', 0, TRIM_EVERY)
    if #expired > 0 then
      redis.call('HDEL', idem, unpack(expired))
      redis.call('ZREM', idemx, unpack(expired))
    end
  end
  local added = redis.call('ZADD', idemx, expires_text, key)
  local count = tonumber(found[2])
  if count then count = count + added end
  if periodic or not count or count > max - TRIM_EVERY then
    count = redis.call('ZCARD', idemx)
  end
  local evicted = {}
  if count > max then
    evicted = redis.call('ZPOPMIN', idemx, count - max)
    count = max
  end
  -- Both keys must outlive the newest record. The set may also have been emptied (and
  -- so deleted) by the sweep or an eviction and made again by ZADD without an expiry.
  local until_text = found[3]
  local extend = not until_text or #until_text ~= #expires_text or until_text < expires_text
    or (count <= 1 and added == 1)
  record = record .. ' ' .. expires_text
  if extend then
    local until_ms = expires + math.ceil(keep / 8)
    redis.call('HSET', idem, key, record, COUNT, string.format('%d', count), EXPIRES, until_ms)
    redis.call('PEXPIREAT', idem, until_ms)
    redis.call('PEXPIREAT', idemx, until_ms)
  else
    redis.call('HSET', idem, key, record, COUNT, string.format('%d', count))
  end
  if #evicted > 0 then
    local members = {}
    for i = 1, #evicted, 2 do members[#members + 1] = evicted[i] end
    redis.call('HDEL', idem, unpack(members))
  end
end

local function publish(KEYS, ARGV)
  local meta, log, idem, idemx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local key = ARGV[9]
  -- Milliseconds, as text and as a number. Numbers are turned into text here with
  -- string.format('%d'), never by Lua or redis.call, which format them as floating
  -- point (a few thousand instructions each, a tenth of this function's cost).
  local clock = redis.call('TIME')
  local now_text = clock[1] .. string.sub('00000' .. clock[2], -6, -4)
  local now = tonumber(now_text)

  local found
  if idem then
    local repeated
    repeated, found = check_key(idem, key, now)
    if repeated then return repeated end
  end

  if not run_id then
    run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  end
  -- RENEW is compared as text, not parsed: times of the same length compare as text as
  -- they do as numbers. Reading `seq` here too, to store it with an HSET instead of
  -- HINCRBY, would cost as much as it saves (each field of an HMGET costs about as much
  -- as the difference) and was measured so.
  local current = redis.call('HMGET', meta, 'epoch', 'rid', RENEW)
  local epoch = current[1]
  local fresh = not epoch or current[2] ~= run_id
  local lifetimes = ' ' .. ARGV[6] .. ' ' .. ARGV[7]
  local renew = fresh
  local seq
  if fresh then
    epoch = ARGV[3]
    redis.call('DEL', log)
    seq = 1
  else
    local stored = current[3]
    renew = not stored or stored < now_text or string.sub(stored, #now_text + 1) ~= lifetimes
    seq = redis.call('HINCRBY', meta, 'seq', 1)
  end
  local seq_text = string.format('%d', seq)
  local periodic = seq % TRIM_EVERY == 0

  -- Approximate trimming: whole stream nodes only, so the stream holds at least
  -- history.size entries and at most a node more; reads never go further back than
  -- history.size (history.lua). NOMKSTREAM while the stream should exist: see above.
  local id = seq_text .. '-0'
  if renew or not redis.call('XADD', log, 'NOMKSTREAM', 'MAXLEN', '~', ARGV[5], id,
      't', now_text, 'b', ARGV[4]) then
    renew = true
    redis.call('XADD', log, 'MAXLEN', '~', ARGV[5], id, 't', now_text, 'b', ARGV[4])
  end
  if periodic then
    local cutoff = now - setting(ARGV[6])
    local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', TRIM_EVERY)
    local stale = {}
    for _, entry in ipairs(oldest) do
      if tonumber(entry[2][2]) >= cutoff then break end
      stale[#stale + 1] = entry[1]
    end
    if #stale > 0 then
      redis.call('XDEL', log, unpack(stale))
    end
  end
  if renew then
    local log_ttl, meta_ttl = setting(ARGV[6]), setting(ARGV[7])
    local due = now + math.ceil(log_ttl / 8)
    local renewal = string.format('%d', due) .. lifetimes
    if fresh then
      redis.call('HSET', meta, 'epoch', epoch, 'seq', '1', 'rid', run_id, RENEW, renewal)
    else
      redis.call('HSET', meta, RENEW, renewal)
    end
    redis.call('PEXPIREAT', log, string.format('%d', due + log_ttl))
    redis.call('PEXPIREAT', meta, string.format('%d', due + meta_ttl))
  end

  redis.call(ARGV[2], ARGV[1], cmsgpack.pack(epoch, seq, now) .. ARGV[4])

  if idem then
    remember_key(idem, idemx, key, epoch .. ' ' .. seq_text .. ' ' .. now_text, now,
      setting(ARGV[8]), setting(ARGV[10]), periodic, found)
  end
  return {0, epoch, seq, now}
end

redis.register_function(LIBRARY, publish)
