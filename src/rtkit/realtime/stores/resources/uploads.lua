-- UploadRegistry on Redis: the quota ledger. Every change of the ledger is atomic; the
-- records themselves live under their own hash tags (one slot per upload) and are written
-- by the caller after the ledger said yes, so a deployment's quota stays one atomic check
-- while the records spread over a cluster.
--
-- KEYS (all under the deployment's tag {<prefix>uploads}, so the script is on one slot):
--   KEYS[1] expiry  zset    upload id -> expiry (ms)
--   KEYS[2] sizes   hash    upload id -> "<bytes>:<user id>"
--   KEYS[3] used    hash    "<user id>:b" -> bytes, "<user id>:n" -> uploads of the user
--   KEYS[4] total   string  bytes of every live upload
-- ARGV[1] = operation, ARGV[2] = now (ms), ARGV[3..] = operation args
-- Every operation returns, last, the ids it forgot: their records are the caller's to delete.
local EXPIRY, SIZES, USED, TOTAL = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, now = ARGV[1], tonumber(ARGV[2])

local function number(value) return tonumber(value or '0') or 0 end

-- Drop one upload's share of the quotas.
local function forget(id)
  local entry = redis.call('HGET', SIZES, id)
  if entry then
    local sep = string.find(entry, ':', 1, true)
    local size = tonumber(string.sub(entry, 1, sep - 1))
    local uid = string.sub(entry, sep + 1)
    if redis.call('HINCRBY', USED, uid .. ':b', -size) <= 0 then redis.call('HDEL', USED, uid .. ':b') end
    if redis.call('HINCRBY', USED, uid .. ':n', -1) <= 0 then redis.call('HDEL', USED, uid .. ':n') end
    if redis.call('DECRBY', TOTAL, size) <= 0 then redis.call('DEL', TOTAL) end
    redis.call('HDEL', SIZES, id)
  end
  redis.call('ZREM', EXPIRY, id)
end

local function purge(limit)
  local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do forget(id) end
  return ids
end

if op == 'create' then
  -- ARGV: 3 id, 4 user, 5 size, 6 ttl (ms),
  --       7 user bytes quota, 8 total bytes quota, 9 user uploads quota ('' = none)
  -- Returns {ok, user bytes, user uploads, total bytes, forgotten ids}.
  local forgotten = purge(100)
  local id, uid, size = ARGV[3], ARGV[4], tonumber(ARGV[5])
  if redis.call('ZSCORE', EXPIRY, id) then
    forget(id)
    forgotten[#forgotten + 1] = id
  end
  local ubytes, count = number(redis.call('HGET', USED, uid .. ':b')), number(redis.call('HGET', USED, uid .. ':n'))
  local total = number(redis.call('GET', TOTAL))
  local over = (ARGV[9] ~= '' and count + 1 > tonumber(ARGV[9]))
    or (ARGV[7] ~= '' and ubytes + size > tonumber(ARGV[7]))
    or (ARGV[8] ~= '' and total + size > tonumber(ARGV[8]))
  if over then return {0, ubytes, count, total, forgotten} end
  redis.call('ZADD', EXPIRY, now + tonumber(ARGV[6]), id)
  redis.call('HSET', SIZES, id, size .. ':' .. uid)
  redis.call('HINCRBY', USED, uid .. ':b', size)
  redis.call('HINCRBY', USED, uid .. ':n', 1)
  redis.call('INCRBY', TOTAL, size)
  return {1, ubytes, count, total, forgotten}
end

if op == 'complete' then
  -- ARGV: 3 id, 4 ttl (ms). Returns 0 when the upload is unknown or expired, else 1.
  local expires = redis.call('ZSCORE', EXPIRY, ARGV[3])
  if not expires or tonumber(expires) <= now then return 0 end
  redis.call('ZADD', EXPIRY, now + tonumber(ARGV[4]), ARGV[3])
  return 1
end

if op == 'purge' then
  -- ARGV: 3 limit. Returns the ids forgotten.
  return purge(tonumber(ARGV[3]))
end

if op == 'usage' then
  -- ARGV: 3 user id, or '' for everyone. Returns {bytes, uploads}.
  if ARGV[3] == '' then
    return {number(redis.call('GET', TOTAL)), redis.call('ZCARD', EXPIRY)}
  end
  return {number(redis.call('HGET', USED, ARGV[3] .. ':b')), number(redis.call('HGET', USED, ARGV[3] .. ':n'))}
end

return redis.error_reply('unknown operation ' .. op)
