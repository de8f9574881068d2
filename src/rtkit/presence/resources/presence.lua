-- PresenceStore on Redis: one script, one atomic transition per call.
-- rtkit/_core/resources/lease.lua is prepended: it defines now, nownum, renew_lease, next_expired.
--
-- KEYS[1] = <base>:leases (its hash tag routes the script; every key shares it)
-- ARGV[1] = operation, ARGV[2] = <base>, ARGV[3] = now ('' = Redis TIME), ARGV[4..] = operation args
--
-- Keys (<base> = <prefix>{presence}):
--   <base>:leases          zset  instance id -> lease expiry
--   <base>:count           hash  users, conns (deleted when nobody is online)
--   <base>:online          zset  online user ids, all scored 0 (lexical paging)
--   <base>:u:<user>        hash  "\31at" -> first connection time, "\31name" -> username,
--                                <sid> -> "" for each connection
--   <base>:i:<instance>:<b> hash sid -> user id, the instance's connections, spread over
--                                buckets b = crc32(sid) % buckets so that each stays a small,
--                                compact (listpack) hash; a purge walks the buckets in order
--   <base>:m:<instance>    hash  sid -> meta JSON (only connections that have meta)
local op, base = ARGV[1], ARGV[2]
local LEASES, COUNT, ONLINE = KEYS[1], base .. ':count', base .. ':online'

local function ikey(iid, bucket) return base .. ':i:' .. iid .. ':' .. bucket end

local function remove(iid, bucket, sid, uid)
  redis.call('HDEL', ikey(iid, bucket), sid)
  redis.call('HDEL', base .. ':m:' .. iid, sid)
  local ukey = base .. ':u:' .. uid
  local name = redis.call('HGET', ukey, '\31name')
  redis.call('HDEL', ukey, sid)
  redis.call('HINCRBY', COUNT, 'conns', -1)
  local offline = 0
  local fixed = 1
  if name then fixed = 2 end
  if redis.call('HLEN', ukey) <= fixed then
    redis.call('DEL', ukey)
    redis.call('ZREM', ONLINE, uid)
    offline = 1
    if redis.call('HINCRBY', COUNT, 'users', -1) <= 0 then redis.call('DEL', COUNT) end
  end
  if name then return {uid, sid, offline, 1, name, iid} end
  return {uid, sid, offline, 0, '', iid}
end

if op == 'connect' then
  -- ARGV: 4 instance, 5 user, 6 sid, 7 has username, 8 username, 9 meta mode (''|set|del),
  --       10 meta, 11 ttl, 12 bucket
  local iid, uid, sid = ARGV[4], ARGV[5], ARGV[6]
  local conns, ukey = ikey(iid, ARGV[12]), base .. ':u:' .. uid
  local owner = redis.call('HGET', conns, sid)
  if owner and owner ~= uid then return {'conflict_user'} end
  if not owner and redis.call('HEXISTS', ukey, sid) == 1 then return {'conflict_sid'} end
  renew_lease(LEASES, iid, ARGV[11])
  local online = 0
  if not owner then
    if redis.call('EXISTS', ukey) == 0 then
      redis.call('HSET', ukey, '\31at', now)
      redis.call('ZADD', ONLINE, 0, uid)
      redis.call('HINCRBY', COUNT, 'users', 1)
      online = 1
    end
    redis.call('HSET', ukey, sid, '')
    redis.call('HSET', conns, sid, uid)
    redis.call('HINCRBY', COUNT, 'conns', 1)
  end
  if ARGV[7] == '1' then redis.call('HSET', ukey, '\31name', ARGV[8]) end
  if ARGV[9] == 'set' then
    redis.call('HSET', base .. ':m:' .. iid, sid, ARGV[10])
  elseif ARGV[9] == 'del' then
    redis.call('HDEL', base .. ':m:' .. iid, sid)
  end
  return {'ok', online, now}

elseif op == 'disconnect' then
  -- ARGV: 4 instance, 5 sid, 6 bucket
  local uid = redis.call('HGET', ikey(ARGV[4], ARGV[6]), ARGV[5])
  if not uid then return {} end
  local out = remove(ARGV[4], ARGV[6], ARGV[5], uid)
  table.insert(out, now)
  return out

elseif op == 'purge' then
  -- Some buckets of one expired instance (or of the forced one).
  -- Returns {now, 'more'|'done', own lease was missing (0|1), instance, next bucket, removals...}.
  -- ARGV: 4 own instance ('' = none, else its lease is renewed), 5 ttl, 6 buckets per call,
  --       7 forced instance, 8 instance being purged ('' = find one), 9 its next bucket,
  --       10 number of buckets
  local missing = 0
  if ARGV[4] ~= '' then missing = renew_lease(LEASES, ARGV[4], ARGV[5]) end
  local target, start, total = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
  if ARGV[7] ~= '' then
    target = ARGV[7]
  elseif target ~= '' then
    local expires = redis.call('ZSCORE', LEASES, target)
    if not expires or tonumber(expires) > nownum then target = '' end  -- it came back
  end
  if target == '' then
    target, start = next_expired(LEASES), 0
    if not target then return {now, 'done', missing, '', 0} end
  end
  local stop = math.min(start + tonumber(ARGV[6]), total)
  local out = {now, 'more', missing, target, stop}
  for bucket = start, stop - 1 do
    local found = redis.call('HGETALL', ikey(target, bucket))
    for i = 1, #found, 2 do
      for _, v in ipairs(remove(target, bucket, found[i], found[i + 1])) do
        table.insert(out, v)
      end
    end
  end
  if stop >= total then
    redis.call('ZREM', LEASES, target)
    redis.call('DEL', base .. ':m:' .. target)
    if ARGV[7] ~= '' then out[2] = 'done' end
  end
  return out

elseif op == 'page' then
  -- ARGV: 4 start ('-' or '(' .. cursor), 5 limit + 1
  local uids = redis.call('ZRANGE', ONLINE, ARGV[4], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[5]))
  local out = {}
  for _, uid in ipairs(uids) do
    table.insert(out, uid)
    table.insert(out, redis.call('HGETALL', base .. ':u:' .. uid))
  end
  return out
end
return redis.error_reply('unknown operation ' .. tostring(op))
