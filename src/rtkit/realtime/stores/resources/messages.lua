-- MessageStore on Redis: append one message to its room's stream, and apply the retention.
--
-- KEYS[1] = the room's stream
-- ARGV[1] = message JSON, ARGV[2] = now (ms), ARGV[3] = max_per_room, ARGV[4] = max_age (ms)
--
-- Entry ids are "<ms>-<seq>" with <ms> the time of the append (never below the newest
-- entry's, so clocks that disagree a little cannot make XADD fail); entries at or before
-- now - max_age are trimmed (MINID ~, whole nodes: reads skip what is left), the stream is
-- trimmed to about max_per_room entries, and it expires max_age after its last append.
local key, now, max_age = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local at, seq = now, 0
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if newest[1] then
  local last_ms, last_seq = string.match(newest[1][1], '^(%d+)-(%d+)$')
  last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
  if last_ms >= at then at, seq = last_ms, last_seq + 1 end
end
-- (an explicit sequence rather than '<ms>-*', so Redis 6.2 does as well as 7)
redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], string.format('%d-%d', at, seq), 'm', ARGV[1])
redis.call('XTRIM', key, 'MINID', '~', string.format('%d', now - max_age + 1))
redis.call('PEXPIRE', key, max_age)
return at
