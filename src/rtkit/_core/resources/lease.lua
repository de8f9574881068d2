-- The lease prelude, prepended to presence.lua and rooms.lua (see rtkit/_core/leases.py).
-- Each script runs on ONE bucket (one hash tag, one cluster slot): every key it touches is
-- in KEYS. KEYS[1] = the bucket's leases (zset instance id -> lease expiry), KEYS[2] = the
-- bucket's digests (hash instance id -> digest of its entries in this bucket).
-- ARGV[1] = operation, ARGV[2] = the time given by an injected clock, or empty to read the
-- Redis server's clock (TIME), which every instance shares, so clock skew between
-- instances cannot matter.
local op = ARGV[1]
local now = ARGV[2]
if now == '' then
  local t = redis.call('TIME')
  now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local nownum = tonumber(now)
local LEASES, DIGESTS = KEYS[1], KEYS[2]

-- Returns 1 if the lease was missing (ZADD counts it as added).
local function renew_lease(iid, ttl)
  return redis.call('ZADD', LEASES, string.format('%.17g', nownum + tonumber(ttl)), iid)
end
local function lease_live(iid)
  local expires = redis.call('ZSCORE', LEASES, iid)
  return expires ~= false and tonumber(expires) > nownum
end

-- The fields of a \31-joined text (none for nil or ''): members and items join with \31.
local function split(text)
  local out = {}
  if not text or text == '' then return out end
  local start = 1
  while true do
    local at = string.find(text, '\31', start, true)
    if not at then
      table.insert(out, string.sub(text, start))
      return out
    end
    table.insert(out, string.sub(text, start, at - 1))
    start = at + 1
  end
end

-- Digests (see Digest in rtkit/_core/leases.py): per instance and bucket, the number of its
-- entries and the sum modulo 2^48 of the first 48 bits of each entry's SHA-1. Digests add
-- up, so an instance's digest is the sum over the buckets. Every transition updates it.
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
local function digest_change(iid, item, sign)
  local n, h = digest_of(iid)
  n = n + sign
  h = (h + sign * item_hash(item)) % DIGEST_MOD
  if n == 0 and h == 0 then
    redis.call('HDEL', DIGESTS, iid)
  else
    redis.call('HSET', DIGESTS, iid, string.format('%d:%.0f', n, h))
  end
end
-- iid's digest in this bucket once the given items are left out: {count, sum}.
local function digest_without(iid, items)
  local n, h = digest_of(iid)
  for _, item in ipairs(items) do
    n = n - 1
    h = (h - item_hash(item)) % DIGEST_MOD
  end
  return {n, h}
end

-- The lease step of a purge pass, in this bucket: renew ARGV[3]'s lease ('' = none, ARGV[4]
-- = ttl) and list up to ARGV[5] expired instances. Returns {now, missing (0|1), expired...}.
if op == 'lease' then
  local missing = 0
  if ARGV[3] ~= '' then missing = renew_lease(ARGV[3], ARGV[4]) end
  local out = {now, missing}
  local found = redis.call('ZRANGE', LEASES, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
  for _, iid in ipairs(found) do table.insert(out, iid) end
  return out
end
