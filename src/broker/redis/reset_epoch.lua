-- Starts a new epoch for a room if it is still in the given one (compare-and-set), and
-- drops its replay buffer. Used when an instance saw the room's sequence go backwards.
--
-- KEYS[1] meta hash   KEYS[2] replay stream
-- ARGV[1] the stale epoch   ARGV[2] the new epoch   ARGV[3] epoch lifetime when idle (ms)
-- Returns {epoch, seq} after the call.

local meta, log = KEYS[1], KEYS[2]
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
local current = redis.call('HMGET', meta, 'epoch', 'seq')
if current[1] == ARGV[1] or not current[1] then
  redis.call('DEL', log)
  -- `renew` 0: the next publish sets both keys' expiry again (publish.lua).
  redis.call('HSET', meta, 'epoch', ARGV[2], 'seq', 0, 'rid', run_id, 'renew', 0)
  redis.call('PEXPIRE', meta, ARGV[3])
  return {ARGV[2], 0}
end
return {current[1], tonumber(current[2])}
