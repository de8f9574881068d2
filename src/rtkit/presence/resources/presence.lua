-- PresenceStore on Redis: one script, one atomic transition per call.
-- rtkit/_core/resources/lease.lua is prepended: it defines now, nownum, renew_lease, next_expired
-- and the digest helpers (DIGESTS, digest_change, digest_matches).
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
--   <base>:digests         hash  instance id -> digest of its connections (items <sid>\31<user>)
local op, base = ARGV[1], ARGV[2]
local LEASES, COUNT, ONLINE = KEYS[1], base .. ':count', base .. ':online'

local function ikey(iid, bucket) return base .. ':i:' .. iid .. ':' .. bucket end

-- Add a new connection; returns 1 if its user came online.
local function add(iid, bucket, sid, uid)
  local ukey, online = base .. ':u:' .. uid, 0
  if redis.call('EXISTS', ukey) == 0 then
    redis.call('HSET', ukey, '\31at', now)
    redis.call('ZADD', ONLINE, 0, uid)
    redis.call('HINCRBY', COUNT, 'users', 1)
    online = 1
  end
  redis.call('HSET', ukey, sid, '')
  redis.call('HSET', ikey(iid, bucket), sid, uid)
  redis.call('HINCRBY', COUNT, 'conns', 1)
  digest_change(iid, sid .. '\31' .. uid, 1)
  return online
end

local function set_meta(iid, sid, mode, meta)
  if mode == 'set' then
    redis.call('HSET', base .. ':m:' .. iid, sid, meta)
  elseif mode == 'del' then
    redis.call('HDEL', base .. ':m:' .. iid, sid)
  end
end

-- Remove a connection (track: keep the instance's digest; a purge drops it whole).
local function remove(iid, bucket, sid, uid, track)
  if track then digest_change(iid, sid .. '\31' .. uid, -1) end
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
  if not owner then online = add(iid, ARGV[12], sid, uid) end
  if ARGV[7] == '1' then redis.call('HSET', ukey, '\31name', ARGV[8]) end
  set_meta(iid, sid, ARGV[9], ARGV[10])
  return {'ok', online, now}

elseif op == 'disconnect' then
  -- ARGV: 4 instance, 5 sid, 6 bucket
  local uid = redis.call('HGET', ikey(ARGV[4], ARGV[6]), ARGV[5])
  if not uid then return {} end
  local out = remove(ARGV[4], ARGV[6], ARGV[5], uid, true)
  table.insert(out, now)
  return out

elseif op == 'check' then
  -- ARGV: 4 instance, 5 expected digest, 6.. (sid, bucket) pairs left out; returns 1 or 0
  local iid, items = ARGV[4], {}
  for i = 6, #ARGV, 2 do
    local uid = redis.call('HGET', ikey(iid, ARGV[i + 1]), ARGV[i])
    if uid then table.insert(items, ARGV[i] .. '\31' .. uid) end
  end
  if digest_matches(iid, ARGV[5], items) then return 1 end
  return 0

elseif op == 'held' then
  -- ARGV: 4 instance, 5 first bucket, 6 bucket after the last; returns {sid, user, ...}
  local out = {}
  for bucket = tonumber(ARGV[5]), tonumber(ARGV[6]) - 1 do
    for _, v in ipairs(redis.call('HGETALL', ikey(ARGV[4], bucket))) do table.insert(out, v) end
  end
  return out

elseif op == 'repair' then
  -- Make the instance hold exactly the given connections (see PresenceBackend.repair).
  -- ARGV: 4 instance, 5 ttl, then 7 per sid: sid, bucket, user ('' = none), has username,
  --       username, meta mode (set|del), meta. Returns {now, {removals...}, {users online}}.
  local iid = ARGV[4]
  renew_lease(LEASES, iid, ARGV[5])
  local removed, online = {}, {}
  for i = 6, #ARGV, 7 do
    local sid, bucket, uid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local owner = redis.call('HGET', ikey(iid, bucket), sid)
    if owner and owner ~= uid then
      for _, v in ipairs(remove(iid, bucket, sid, owner, true)) do table.insert(removed, v) end
      owner = nil
    end
    if uid ~= '' then
      local ukey = base .. ':u:' .. uid
      if not owner and redis.call('HEXISTS', ukey, sid) == 0 then
        if add(iid, bucket, sid, uid) == 1 then table.insert(online, uid) end
        owner = uid
      end
      if owner then
        if ARGV[i + 3] == '1' and redis.call('HEXISTS', ukey, '\31name') == 0 then
          redis.call('HSET', ukey, '\31name', ARGV[i + 4])
        end
        set_meta(iid, sid, ARGV[i + 5], ARGV[i + 6])
      end
    end
  end
  return {now, removed, online}

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
      for _, v in ipairs(remove(target, bucket, found[i], found[i + 1], false)) do
        table.insert(out, v)
      end
    end
  end
  if stop >= total then
    redis.call('ZREM', LEASES, target)
    redis.call('DEL', base .. ':m:' .. target)
    redis.call('HDEL', DIGESTS, target)
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
