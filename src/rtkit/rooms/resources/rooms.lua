-- RoomManager on Redis: one script, one atomic transition per call.
-- rtkit/_core/resources/lease.lua is prepended: it defines now, nownum, renew_lease, next_expired
-- and the digest helpers (DIGESTS, digest_change, digest_matches).
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
--   <base>:digests             hash  instance id -> digest of its memberships
--                                    (items <sid>\31<user>\31<room>)
local op, base = ARGV[1], ARGV[2]
local LEASES, ROOMS, CREATED = KEYS[1], base .. ':rooms', base .. ':created'

local function item(sid, uid, room) return sid .. '\31' .. uid .. '\31' .. room end

-- Put sid of iid (not in rooms as another user) in room; returns 1 if the user is new to it.
local function enter(iid, room, uid, sid)
  if redis.call('SADD', base .. ':s:' .. iid .. ':' .. sid, room) == 0 then return 0 end
  redis.call('HSET', base .. ':i:' .. iid, sid, uid)
  digest_change(iid, item(sid, uid, room), 1)
  if redis.call('HINCRBY', base .. ':u:' .. uid, room, 1) > 1 then return 0 end
  redis.call('ZADD', base .. ':r:' .. room, 0, uid)
  if redis.call('ZADD', ROOMS, 0, room) == 1 then redis.call('HSET', CREATED, room, now) end
  return 1
end

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

local function report(out, room, uid, sid, left)
  table.insert(out, room)
  table.insert(out, uid)
  table.insert(out, sid)
  table.insert(out, left)
end

-- Take sid of iid out of all its rooms; appends {room, uid, sid, left} to out.
-- (track: keep the instance's digest; a purge drops it whole)
local function drop_sid(iid, sid, uid, out, track)
  local skey = base .. ':s:' .. iid .. ':' .. sid
  local rooms = redis.call('SMEMBERS', skey)
  redis.call('DEL', skey)
  redis.call('HDEL', base .. ':i:' .. iid, sid)
  for _, room in ipairs(rooms) do
    if track then digest_change(iid, item(sid, uid, room), -1) end
    report(out, room, uid, sid, drop(room, uid))
  end
end

if op == 'join' then
  -- ARGV: 4 instance, 5 room, 6 user, 7 sid, 8 ttl, 9 most rooms per user ('' = no limit)
  -- Returns 1 (new to the room), 0, -1 (sid of another user) or {'too_many', rooms}.
  local iid, room, uid, sid = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local ikey = base .. ':i:' .. iid
  local owner = redis.call('HGET', ikey, sid)
  if owner and owner ~= uid then return -1 end
  if ARGV[9] ~= '' then
    local ukey = base .. ':u:' .. uid
    local count = redis.call('HLEN', ukey)
    if count >= tonumber(ARGV[9]) and redis.call('HEXISTS', ukey, room) == 0 then
      return {'too_many', count}
    end
  end
  renew_lease(LEASES, iid, ARGV[8])
  return enter(iid, room, uid, sid)

elseif op == 'leave' then
  -- ARGV: 4 instance, 5 room, 6 sid
  local iid, room, sid = ARGV[4], ARGV[5], ARGV[6]
  local ikey = base .. ':i:' .. iid
  local uid = redis.call('HGET', ikey, sid)
  if not uid then return 0 end
  local skey = base .. ':s:' .. iid .. ':' .. sid
  if redis.call('SREM', skey, room) == 0 then return 0 end
  digest_change(iid, item(sid, uid, room), -1)
  if redis.call('EXISTS', skey) == 0 then redis.call('HDEL', ikey, sid) end
  return drop(room, uid)

elseif op == 'leave_all' then
  -- ARGV: 4 instance, 5 sid; returns the flat {room, uid, sid, left} list
  local uid = redis.call('HGET', base .. ':i:' .. ARGV[4], ARGV[5])
  local out = {}
  if uid then drop_sid(ARGV[4], ARGV[5], uid, out, true) end
  return out

elseif op == 'check' then
  -- ARGV: 4 instance, 5 expected digest, 6.. sids left out; returns 1 or 0
  local iid, items = ARGV[4], {}
  for i = 6, #ARGV do
    local sid = ARGV[i]
    local uid = redis.call('HGET', base .. ':i:' .. iid, sid)
    if uid then
      for _, room in ipairs(redis.call('SMEMBERS', base .. ':s:' .. iid .. ':' .. sid)) do
        table.insert(items, item(sid, uid, room))
      end
    end
  end
  if digest_matches(iid, ARGV[5], items) then return 1 end
  return 0

elseif op == 'held' then
  -- ARGV: 4 instance, 5 HSCAN cursor, 6 count; returns {next cursor, sid, uid, rooms, ...}
  -- with the rooms joined by \31
  local iid = ARGV[4]
  local page = redis.call('HSCAN', base .. ':i:' .. iid, ARGV[5], 'COUNT', tonumber(ARGV[6]))
  local out, found = {page[1]}, page[2]
  for i = 1, #found, 2 do
    local rooms = redis.call('SMEMBERS', base .. ':s:' .. iid .. ':' .. found[i])
    table.insert(out, found[i])
    table.insert(out, found[i + 1])
    table.insert(out, table.concat(rooms, '\31'))
  end
  return out

elseif op == 'repair' then
  -- Put each listed sid of the instance in exactly the listed rooms (see RoomsBackend.repair).
  -- ARGV: 4 instance, 5 ttl, then 3 per sid: sid, user ('' = none), rooms joined by \31.
  -- Returns the flat {room, uid, sid, left} list of what was removed.
  local iid, out = ARGV[4], {}
  renew_lease(LEASES, iid, ARGV[5])
  local ikey = base .. ':i:' .. iid
  for i = 6, #ARGV, 3 do
    local sid, uid = ARGV[i], ARGV[i + 1]
    local owner = redis.call('HGET', ikey, sid)
    if owner and owner ~= uid then
      drop_sid(iid, sid, owner, out, true)
      owner = nil
    end
    if uid ~= '' then
      local want, wanted = {}, {}
      for room in string.gmatch(ARGV[i + 2], '[^\31]+') do
        table.insert(want, room)
        wanted[room] = true
      end
      if owner then
        local skey = base .. ':s:' .. iid .. ':' .. sid
        local rooms = redis.call('SMEMBERS', skey)
        table.sort(rooms)
        for _, room in ipairs(rooms) do
          if not wanted[room] then
            redis.call('SREM', skey, room)
            digest_change(iid, item(sid, uid, room), -1)
            report(out, room, uid, sid, drop(room, uid))
          end
        end
        if redis.call('EXISTS', skey) == 0 then redis.call('HDEL', ikey, sid) end
      end
      for _, room in ipairs(want) do enter(iid, room, uid, sid) end
    end
  end
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
  for i = 1, #found, 2 do drop_sid(target, found[i], found[i + 1], out, false) end
  if redis.call('EXISTS', ikey) == 0 then
    redis.call('ZREM', LEASES, target)
    redis.call('HDEL', DIGESTS, target)
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
