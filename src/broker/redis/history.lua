-- Reads a room's position and part of its replay buffer, creating the room's epoch if
-- it has none (or if it belongs to another Redis process: see publish.lua), so that a
-- position handed to a client always means something.
--
-- KEYS[1] meta hash   KEYS[2] replay stream
-- ARGV[1] epoch to use if a new one is needed   ARGV[2] 'latest' or 'after'
-- ARGV[3] with 'after': return entries with seq above this   ARGV[4] most entries
-- ARGV[5] buffer age (ms)   ARGV[6] epoch lifetime when idle (ms)   ARGV[7] buffer length
-- Returns {epoch, top seq, first buffered seq or -1, seq1, time1, body1, seq2, ...}.

local meta, log = KEYS[1], KEYS[2]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cutoff = now - tonumber(ARGV[5])

local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local current = redis.call('HMGET', meta, 'epoch', 'seq', 'rid')
local epoch, top = current[1], tonumber(current[2])
if not epoch or current[3] ~= run_id then
  epoch, top = ARGV[1], 0
  redis.call('DEL', log)
  -- `renew` 0: the next publish sets both keys' expiry again (publish.lua).
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'rid', run_id, 'renew', 0)
  redis.call('PEXPIRE', meta, ARGV[6])
end

local function seq_of(entry)
  return tonumber(string.match(entry[1], '^(%d+)'))
end

-- The oldest entry that is still young enough, among the last `buffer length` ones:
-- publishes trim the stream approximately (whole nodes), so it may hold a few more.
local first = -1
local start = math.max(top - tonumber(ARGV[7]) + 1, 0) .. '-0'
while first == -1 do
  local batch = redis.call('XRANGE', log, start, '+', 'COUNT', 64)
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    if tonumber(entry[2][2]) >= cutoff then
      first = seq_of(entry)
      break
    end
  end
  start = '(' .. batch[#batch][1]
end

local result = {epoch, top, first}
local limit = tonumber(ARGV[4])
if limit > 0 and first ~= -1 then
  local entries
  if ARGV[2] == 'latest' then
    entries = redis.call('XREVRANGE', log, '+', '-', 'COUNT', limit)
    local n = #entries
    for i = 1, math.floor(n / 2) do
      entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
    end
  else
    local after = math.max(tonumber(ARGV[3]), first - 1)
    entries = redis.call('XRANGE', log, '(' .. after .. '-0', '+', 'COUNT', limit)
  end
  for _, entry in ipairs(entries) do
    if seq_of(entry) >= first and tonumber(entry[2][2]) >= cutoff then
      table.insert(result, seq_of(entry))
      table.insert(result, tonumber(entry[2][2]))
      table.insert(result, entry[2][4])
    end
  end
end
return result
