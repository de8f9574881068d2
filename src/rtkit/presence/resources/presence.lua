-- PresenceStore on Redis: one script, one atomic transition per call.
-- LUA_NOW (rtkit/_leases.py) is prepended: it defines now, nownum, renew_lease, next_expired.
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
--   <base>:i:<instance>    hash  sid -> user id, the instance's connections
--   <base>:m:<instance>    hash  sid -> meta JSON (only connections that have meta)
local op, base = ARGV[1], ARGV[2]
local LEASES, COUNT, ONLINE = KEYS[1], base .. ':count', base .. ':online'

local function remove(iid, sid, uid)
  redis.call('HDEL', base .. ':i:' .. iid, sid)
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
  -- ARGV: 4 instance, 5 user, 6 sid, 7 has username, 8 username, 9 meta mode (''|set|del), 10 meta, 11 ttl
  local iid, uid, sid = ARGV[4], ARGV[5], ARGV[6]
  local ikey, ukey = base .. ':i:' .. iid, base .. ':u:' .. uid
  local owner = redis.call('HGET', ikey, sid)
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
    redis.call('HSET', ikey, sid, uid)
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
  -- ARGV: 4 instance, 5 sid
  local uid = redis.call('HGET', base .. ':i:' .. ARGV[4], ARGV[5])
  if not uid then return {} end
  local out = remove(ARGV[4], ARGV[5], uid)
  table.insert(out, now)
  return out

elseif op == 'purge' then
  -- One batch of one expired instance (or of ARGV[7], forced).
  -- Returns {now, 'more'|'done', own lease was missing (0|1), removals...}.
  -- ARGV: 4 own instance ('' = none, else its lease is renewed), 5 ttl, 6 batch, 7 forced instance
  local missing = 0
  if ARGV[4] ~= '' then missing = renew_lease(LEASES, ARGV[4], ARGV[5]) end
  local target = ARGV[7]
  if target == '' then target = next_expired(LEASES) end
  if not target then return {now, 'done', missing} end
  local ikey = base .. ':i:' .. target
  local out = {now, 'more', missing}
  local found = redis.call('HRANDFIELD', ikey, tonumber(ARGV[6]), 'WITHVALUES')
  for i = 1, #found, 2 do
    for _, v in ipairs(remove(target, found[i], found[i + 1])) do table.insert(out, v) end
  end
  if redis.call('EXISTS', ikey) == 0 then
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
