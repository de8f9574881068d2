-- RoomManager on Redis: one script, one atomic transition per call.
-- rtkit/_core/resources/lease.lua is prepended: it defines now, nownum, renew_lease, next_expired.
--
-- KEYS[1] = <base>:leases (its hash tag routes the script; every key shares it)
-- ARGV[1] = operation, ARGV[2] = <base>, ARGV[3] = now ('' = Redis TIME), ARGV[4..] = operation args
--
-- Keys (<base> = <prefix>{rooms}):
--   <base>:leases              zset  instance id -> lease expiry
--   <base>:rooms               zset  room ids with members, all scored 0 (lexical paging)
--   <base>:created             hash  room id -> creation time
--   <base>:r:<room>            zset  the room's user ids, scored 0
--   <base>:u:<user>            hash  room id -> the user's connections in that room
--   <base>:i:<instance>        hash  sid -> user id, the instance's connections in rooms
--   <base>:s:<instance>:<sid>  set   the connection's rooms (instance ids have no ':')
local op, base = ARGV[1], ARGV[2]
local LEASES, ROOMS, CREATED = KEYS[1], base .. ':rooms', base .. ':created'

-- One connection of uid leaves room; returns 1 if the user left the room.
local function drop(room, uid)
  local ukey = base .. ':u:' .. uid
  if redis.call('HINCRBY', ukey, room, -1) > 0 then return 0 end
  redis.call('HDEL', ukey, room)
  local rkey = base .. ':r:' .. room
  redis.call('ZREM', rkey, uid)
  if redis.call('EXISTS', rkey) == 0 then
    redis.call('ZREM', ROOMS, room)
    redis.call('HDEL', CREATED, room)
  end
  return 1
end

-- Take sid of iid out of all its rooms; appends {room, uid, sid, left} to out.
local function drop_sid(iid, sid, uid, out)
  local skey = base .. ':s:' .. iid .. ':' .. sid
  local rooms = redis.call('SMEMBERS', skey)
  redis.call('DEL', skey)
  redis.call('HDEL', base .. ':i:' .. iid, sid)
  for _, room in ipairs(rooms) do
    local left = drop(room, uid)
    table.insert(out, room)
    table.insert(out, uid)
    table.insert(out, sid)
    table.insert(out, left)
  end
end

if op == 'join' then
  -- ARGV: 4 instance, 5 room, 6 user, 7 sid, 8 ttl
  local iid, room, uid, sid = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local ikey = base .. ':i:' .. iid
  local owner = redis.call('HGET', ikey, sid)
  if owner and owner ~= uid then return -1 end
  renew_lease(LEASES, iid, ARGV[8])
  if redis.call('SADD', base .. ':s:' .. iid .. ':' .. sid, room) == 0 then return 0 end
  if not owner then redis.call('HSET', ikey, sid, uid) end
  if redis.call('HINCRBY', base .. ':u:' .. uid, room, 1) > 1 then return 0 end
  redis.call('ZADD', base .. ':r:' .. room, 0, uid)
  if redis.call('ZADD', ROOMS, 0, room) == 1 then redis.call('HSET', CREATED, room, now) end
  return 1

elseif op == 'leave' then
  -- ARGV: 4 instance, 5 room, 6 sid
  local iid, room, sid = ARGV[4], ARGV[5], ARGV[6]
  local ikey = base .. ':i:' .. iid
  local uid = redis.call('HGET', ikey, sid)
  if not uid then return 0 end
  local skey = base .. ':s:' .. iid .. ':' .. sid
  if redis.call('SREM', skey, room) == 0 then return 0 end
  if redis.call('EXISTS', skey) == 0 then redis.call('HDEL', ikey, sid) end
  return drop(room, uid)

elseif op == 'leave_all' then
  -- ARGV: 4 instance, 5 sid; returns the flat {room, uid, sid, left} list
  local uid = redis.call('HGET', base .. ':i:' .. ARGV[4], ARGV[5])
  local out = {}
  if uid then drop_sid(ARGV[4], ARGV[5], uid, out) end
  return out

elseif op == 'purge' then
  -- One batch of one expired instance (or of ARGV[7], forced).
  -- Returns {'more'|'done', own lease was missing (0|1), removals...}.
  -- ARGV: 4 own instance ('' = none, else its lease is renewed), 5 ttl, 6 batch, 7 forced instance
  local missing = 0
  if ARGV[4] ~= '' then missing = renew_lease(LEASES, ARGV[4], ARGV[5]) end
  local target = ARGV[7]
  if target == '' then target = next_expired(LEASES) end
  if not target then return {'done', missing} end
  local ikey = base .. ':i:' .. target
  local out = {'more', missing}
  local found = redis.call('HRANDFIELD', ikey, tonumber(ARGV[6]), 'WITHVALUES')
  for i = 1, #found, 2 do drop_sid(target, found[i], found[i + 1], out) end
  if redis.call('EXISTS', ikey) == 0 then
    redis.call('ZREM', LEASES, target)
    if ARGV[7] ~= '' then out[1] = 'done' end
  end
  return out

elseif op == 'rooms' then
  -- ARGV: 4 start ('-' or '(' .. cursor), 5 limit + 1; returns {room, user count, created at, ...}
  local ids = redis.call('ZRANGE', ROOMS, ARGV[4], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[5]))
  local out = {}
  for _, room in ipairs(ids) do
    table.insert(out, room)
    table.insert(out, redis.call('ZCARD', base .. ':r:' .. room))
    table.insert(out, redis.call('HGET', CREATED, room))
  end
  return out
end
return redis.error_reply('unknown operation ' .. tostring(op))
