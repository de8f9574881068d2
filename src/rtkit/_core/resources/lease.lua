-- The lease prelude, prepended to presence.lua and rooms.lua (see rtkit/_core/leases.py).
-- ARGV[3] is the time given by an injected clock, or empty to read the Redis
-- server's clock (TIME), which every instance shares, so clock skew between
-- instances cannot matter.
local now = ARGV[3]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local nownum = tonumber(now)
local function renew_lease(leases, iid, ttl)
  local expires = nownum + tonumber(ttl)
  return redis.call('ZADD', leases, string.format('%.17g', expires), iid)
end
local function next_expired(leases)
  return redis.call('ZRANGE', leases, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1)[1]
end
