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

-- Digests (see Digest in rtkit/_core/leases.py): for each instance, the number of its
-- entries and the sum modulo 2^48 of the first 48 bits of each entry's SHA-1, in the hash
-- <base>:digests (field = instance id). Every transition updates it in the same script.
local DIGESTS = ARGV[2] .. ':digests'
local DIGEST_MOD = 281474976710656
local function item_hash(item)
  return tonumber(string.sub(redis.sha1hex(item), 1, 12), 16)
end
local function digest_of(iid)
  local text = redis.call('HGET', DIGESTS, iid)
  if not text then return 0, 0 end
  local sep = string.find(text, ':', 1, true)
  return tonumber(string.sub(text, 1, sep - 1)), tonumber(string.sub(text, sep + 1))
end
local function digest_text(n, h)
  return string.format('%d:%.0f', n, h)
end
local function digest_change(iid, item, sign)
  local n, h = digest_of(iid)
  n = n + sign
  h = (h + sign * item_hash(item)) % DIGEST_MOD
  if n == 0 and h == 0 then
    redis.call('HDEL', DIGESTS, iid)
  else
    redis.call('HSET', DIGESTS, iid, digest_text(n, h))
  end
end
-- Whether iid's digest is `expected` once the given items are left out.
local function digest_matches(iid, expected, items)
  local n, h = digest_of(iid)
  for _, item in ipairs(items) do
    n = n - 1
    h = (h - item_hash(item)) % DIGEST_MOD
  end
  return digest_text(n, h) == expected
end
