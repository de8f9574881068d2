-- UploadRegistry on Redis: every change of a record and of the quotas it counts in is atomic.
--
-- KEYS[1] = <base>.expiry (its hash tag routes the script; every key shares it)
-- ARGV[1] = operation, ARGV[2] = <base>, ARGV[3] = now (ms), ARGV[4..] = operation args
--
-- Keys (<base> = <prefix>{uploads}; the index keys have no ':' after the tag, so no
-- upload id can name one of them):
--   <base>:<id>          string  the record (JSON), PX until it expires
--   <base>:<id>:claim    string  held while one request transfers the bytes
--   <base>.expiry        zset    upload id -> expiry (ms)
--   <base>.sizes         hash    upload id -> "<bytes>:<user id>"
--   <base>.used:<user>   hash    bytes, n: what the user's live uploads use
--   <base>.total         string  bytes of every live upload
local op, base, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local EXPIRY, SIZES, TOTAL = KEYS[1], base .. '.sizes', base .. '.total'

local function used_key(uid) return base .. '.used:' .. uid end

-- Drop one record and its share of the quotas.
local function forget(id)
  local entry = redis.call('HGET', SIZES, id)
  if entry then
    local sep = string.find(entry, ':', 1, true)
    local size = tonumber(string.sub(entry, 1, sep - 1))
    local ukey = used_key(string.sub(entry, sep + 1))
    redis.call('HINCRBY', ukey, 'bytes', -size)
    if redis.call('HINCRBY', ukey, 'n', -1) <= 0 then redis.call('DEL', ukey) end
    if redis.call('DECRBY', TOTAL, size) <= 0 then redis.call('DEL', TOTAL) end
    redis.call('HDEL', SIZES, id)
  end
  redis.call('ZREM', EXPIRY, id)
  redis.call('DEL', base .. ':' .. id, base .. ':' .. id .. ':claim')
end

local function purge(limit)
  local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do forget(id) end
  return ids
end

local function number(value) return tonumber(value or '0') or 0 end

if op == 'create' then
  -- ARGV: 4 id, 5 user, 6 size, 7 record JSON, 8 ttl (ms),
  --       9 user bytes quota, 10 total bytes quota, 11 user uploads quota ('' = none)
  purge(100)
  local id, uid, size = ARGV[4], ARGV[5], tonumber(ARGV[6])
  if redis.call('ZSCORE', EXPIRY, id) then forget(id) end
  local ukey = used_key(uid)
  local ubytes, count = number(redis.call('HGET', ukey, 'bytes')), number(redis.call('HGET', ukey, 'n'))
  local total = number(redis.call('GET', TOTAL))
  local over = (ARGV[11] ~= '' and count + 1 > tonumber(ARGV[11]))
    or (ARGV[9] ~= '' and ubytes + size > tonumber(ARGV[9]))
    or (ARGV[10] ~= '' and total + size > tonumber(ARGV[10]))
  if over then return {0, ubytes, count, total} end
  redis.call('SET', base .. ':' .. id, ARGV[7], 'PX', ARGV[8])
  redis.call('ZADD', EXPIRY, now + tonumber(ARGV[8]), id)
  redis.call('HSET', SIZES, id, size .. ':' .. uid)
  redis.call('HINCRBY', ukey, 'bytes', size)
  redis.call('HINCRBY', ukey, 'n', 1)
  redis.call('INCRBY', TOTAL, size)
  return {1, ubytes, count, total}
end

if op == 'complete' then
  -- ARGV: 4 id, 5 record JSON (complete), 6 ttl (ms). Returns 0 when the record is gone.
  local id = ARGV[4]
  local expires = redis.call('ZSCORE', EXPIRY, id)
  if (expires and tonumber(expires) <= now) or redis.call('EXISTS', base .. ':' .. id) == 0 then
    return 0
  end
  redis.call('SET', base .. ':' .. id, ARGV[5], 'PX', ARGV[6])
  if expires then redis.call('ZADD', EXPIRY, now + tonumber(ARGV[6]), id) end
  redis.call('DEL', base .. ':' .. id .. ':claim')
  return 1
end

if op == 'purge' then
  -- ARGV: 4 limit. Returns the ids forgotten.
  return purge(tonumber(ARGV[4]))
end

return redis.error_reply('unknown operation ' .. op)
