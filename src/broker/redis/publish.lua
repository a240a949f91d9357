-- A Redis function library (loaded with FUNCTION LOAD under a name derived from this
-- text, so instances of different versions never replace each other's code). Its
-- function LIBRARY sequences one publication of a room (LIBRARY_many several, of any
-- rooms, one after the other: see publish_many), each atomically:
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
-- Each idempotency key of a room is a string key of its own (KEYS[3], named after the
-- room and the key, so it lives in the room's slot) holding "epoch seq time" of the
-- original publish, with the key's lifetime as its TTL: one GET to check, one SET ... PX
-- to remember, nothing to sweep or count. Earlier builds kept a room's keys in one hash
-- (KEYS[4], key -> "epoch seq time expires") beside a sorted set of their expiries;
-- while instances of such a build may still be publishing (a rolling upgrade) and for
-- the longest key lifetime after, a retry can reach this code with a key recorded
-- there, so a key not found here is looked up in that hash too (one HMGET, of a key that
-- no longer exists once the upgrade's keys have expired). The outbox relay's keys
-- ("outbox:...") are also written there, in the earlier builds' format, keeping the
-- hash's own expiry (#expires) past theirs: every instance relays the same outbox rows,
-- so during a rolling upgrade an instance of an earlier build publishes rows that a new
-- one already published, and it finds only what that hash holds. (Clients' keys are
-- not: a client's retry reaches an earlier build only if it moves from a new instance to
-- an old one during the upgrade; see docs/cluster.md.)
--
-- The replay stream and the meta hash are not given their expiry at every publish.
-- Both are set with PEXPIREAT to now + their lifetime + an eighth of the
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
-- Entries past the age bound are dropped every TRIM_EVERY publishes of a room (reads skip
-- them meanwhile; MAXLEN bounds the count). Finding them means reading the oldest
-- entries with their bodies, which cost as much as the rest of a publish when done every
-- TRIM_EVERY publishes; so one more field of the meta hash, AGED, holds the time of the
-- oldest entry the last such read kept: no entry of the stream is older (entries are
-- only ever added newer, and trimmed), and until that time is past the age bound there
-- is nothing to drop and nothing to read. A room whose buffer turns over within the age
-- bound reads its oldest entries about once per age bound instead.
--
-- KEYS[1] meta hash (epoch, seq, rid, RENEW, AGED)   KEYS[2] replay stream
-- KEYS[3] the idempotency key's record, KEYS[4] the room's idempotency hash of earlier
-- versions (both only with a key)
-- ARGV[1] channel   ARGV[2] epoch to use if a new one is needed   ARGV[3] body (MessagePack)
-- ARGV[4] the settings, one text: "COMMAND LENGTH AGE IDLE KEEP", that is PUBLISH or
--   SPUBLISH, the buffer's length, its age bound (ms), the epoch's lifetime when idle
--   (ms) and how long to remember the key (ms)
-- ARGV[5] the idempotency key
-- Returns {0, epoch, seq, time} for a new publication, {1, epoch, seq, time} for a repeat.

-- Every redis.call costs about a microsecond on top of the command, so work that can
-- wait is done every TRIM_EVERY publishes of a room, TRIM_EVERY items at a time.
local TRIM_EVERY = 16
local RENEW, AGED = 'renew', 'aged'
-- The field of the earlier builds' idempotency hash that holds when the hash expires.
local LEGACY_EXPIRES = '#expires'

local run_id

-- The settings, one argument rather than five: Redis turns every argument into a Lua
-- string and a slot of the ARGV table, about a thousand instructions each. An instance
-- sends one of two texts (two key lifetimes), so each is parsed once per process, not
-- at every publish (tonumber is glibc's strtod, about a thousand instructions even for
-- "1000"; for the same reason stored times are compared as text where they can be).
local parsed = {}
local function settings_of(text)
  local s = parsed[text]
  if not s then
    local command, length, age, idle, keep = string.match(text, '^(%u+) (%d+) (%d+) (%d+) (%d+)$')
    s = {
      command = command, length = length, keep = keep, keep_ms = tonumber(keep),
      age = tonumber(age), idle = tonumber(idle),
      -- RENEW's suffix: the two lifetimes the expiries were set with.
      lifetimes = ' ' .. age .. ' ' .. idle,
    }
    parsed[text] = s
  end
  return s
end

-- The original ack of the publish that used the idempotency key, if remembered: in its
-- record, or (see above) in the earlier builds' hash, whose entries carry their expiry.
-- Otherwise nil and, for an outbox key (written to that hash too), the hash's #expires
-- (nil if it has none).
local function repeated(record, legacy, key, outbox, now)
  local original = redis.call('GET', record)
  if original then
    local epoch, seq, time = string.match(original, '^(%S+) (%d+) (%d+)$')
    return {1, epoch, tonumber(seq), tonumber(time)}
  end
  local found
  if outbox then
    found = redis.call('HMGET', legacy, key, LEGACY_EXPIRES)
  else
    found = {redis.call('HGET', legacy, key)}
  end
  original = found[1]
  if original then
    local epoch, seq, time, expires = string.match(original, '^(%S+) (%d+) (%d+) (%d+)$')
    if tonumber(expires) > now then
      return {1, epoch, tonumber(seq), tonumber(time)}
    end
  end
  return nil, found[2]
end

-- Records an outbox key in the earlier builds' hash too, as they did: "epoch seq time
-- expires", the hash (and their sorted set, if any) living past it.
local function remember_legacy(legacy, key, ack, now, keep, hash_expires)
  local expires = string.format('%d', now + keep)
  redis.call('HSET', legacy, key, ack .. ' ' .. expires)
  if not hash_expires or #hash_expires < #expires or hash_expires < expires then
    local until_ms = string.format('%d', now + keep + math.ceil(keep / 8))
    redis.call('HSET', legacy, LEGACY_EXPIRES, until_ms)
    redis.call('PEXPIREAT', legacy, until_ms)
  end
end

-- Drops replay entries past the age bound (`cutoff`, ms), TRIM_EVERY at most, unless the
-- meta hash's AGED says none can be (see above); records the oldest entry kept.
local function drop_aged(meta, log, cutoff)
  local aged = redis.call('HGET', meta, AGED)
  if aged and tonumber(aged) >= cutoff then return end
  local oldest = redis.call('XRANGE', log, '-', '+', 'COUNT', TRIM_EVERY)
  local stale = {}
  for _, entry in ipairs(oldest) do
    local time = entry[2][2]
    if tonumber(time) >= cutoff then
      redis.call('HSET', meta, AGED, time)
      break
    end
    stale[#stale + 1] = entry[1]
  end
  if #stale > 0 then
    redis.call('XDEL', log, unpack(stale))
  end
end

-- The time in milliseconds, as text and as a number. Numbers are turned into text here
-- with string.format('%d'), never by Lua or redis.call, which format them as floating
-- point (a few thousand instructions each, a tenth of this function's cost).
local function clock()
  local time = redis.call('TIME')
  local now_text = time[1] .. string.sub('00000' .. time[2], -6, -4)
  return now_text, tonumber(now_text)
end

-- One publication: the keys and arguments of one publish (see the top of this file),
-- at the time `now`.
local function publish_one(meta, log, record, legacy, channel, new_epoch, body, settings, key,
    now_text, now)
  settings = settings_of(settings)
  local hash_expires
  local outbox = record and string.sub(key, 1, 7) == 'outbox:'
  if record then
    local original
    original, hash_expires = repeated(record, legacy, key, outbox, now)
    if original then return original end
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
  local lifetimes = settings.lifetimes
  local renew = fresh
  local seq
  if fresh then
    epoch = new_epoch
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
  if renew or not redis.call('XADD', log, 'NOMKSTREAM', 'MAXLEN', '~', settings.length, id,
      't', now_text, 'b', body) then
    renew = true
    redis.call('XADD', log, 'MAXLEN', '~', settings.length, id, 't', now_text, 'b', body)
  end
  if periodic then
    drop_aged(meta, log, now - settings.age)
  end
  if renew then
    local log_ttl, meta_ttl = settings.age, settings.idle
    local due = now + math.ceil(log_ttl / 8)
    local renewal = string.format('%d', due) .. lifetimes
    if fresh then
      redis.call('HSET', meta, 'epoch', epoch, 'seq', '1', 'rid', run_id, RENEW, renewal,
        AGED, now_text)
    else
      redis.call('HSET', meta, RENEW, renewal)
    end
    redis.call('PEXPIREAT', log, string.format('%d', due + log_ttl))
    redis.call('PEXPIREAT', meta, string.format('%d', due + meta_ttl))
  end

  redis.call(settings.command, channel, cmsgpack.pack(epoch, seq, now) .. body)

  -- (A lifetime of 0 remembers nothing: SET refuses PX 0.)
  if record and settings.keep_ms > 0 then
    local ack = epoch .. ' ' .. seq_text .. ' ' .. now_text
    redis.call('SET', record, ack, 'PX', settings.keep)
    if outbox then
      remember_legacy(legacy, key, ack, now, settings.keep_ms, hash_expires)
    end
  end
  return {0, epoch, seq, now}
end

local function publish(KEYS, ARGV)
  local now_text, now = clock()
  return publish_one(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
    ARGV[5], now_text, now)
end

-- Several publications, of any rooms of this Redis, in the order given: per publication
-- 2 keys (meta, stream) or, with an idempotency key, 4, and 5 arguments, as for one
-- (the key is '' when there is none). They share one TIME. Returns one reply per
-- publication, in order: {0|1, epoch, seq, time} as for one, or {2, message} for one
-- that failed (an error of one publication does not stop the others: each runs in a
-- pcall; like a failed call of `publish`, one that failed may have done part of its
-- work, and its retry with the same key finds whatever it recorded).
-- Redis does per call about a sixth of a publication's work before and after the Lua
-- code runs (parsing, the command, the reply), so several publishes waiting at once
-- are cheaper as one call (see batch.rs).
local function publish_many(KEYS, ARGV)
  local now_text, now = clock()
  local replies = {}
  local k = 1
  for a = 1, #ARGV, 5 do
    local key = ARGV[a + 4]
    local record, legacy, used = nil, nil, 2
    if key ~= '' then record, legacy, used = KEYS[k + 2], KEYS[k + 3], 4 end
    local ok, reply = pcall(publish_one, KEYS[k], KEYS[k + 1], record, legacy, ARGV[a],
      ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], key, now_text, now)
    if not ok then
      reply = {2, type(reply) == 'table' and reply.err or tostring(reply)}
    end
    replies[#replies + 1] = reply
    k = k + used
  end
  return replies
end

redis.register_function(LIBRARY, publish)
redis.register_function(LIBRARY .. '_many', publish_many)
