-- RoomManager on Redis: one atomic transition per call, each call on ONE bucket.
-- rtkit/_core/resources/lease.lua is prepended: it defines op, now, nownum, LEASES, DIGESTS,
-- renew_lease, lease_live, split, the digest helpers and the 'lease' step of a purge pass.
--
-- A room's bucket b = crc32(room id) % 32; every key below is under the tag
-- {<prefix>rooms:<b>}, and every key a call touches is in KEYS:
--   KEYS[1] :l            zset  instance id -> lease expiry (renewed in every bucket)
--   KEYS[2] :d            hash  instance id -> digest of its memberships in this bucket
--                               (items <sid>\31<user>\31<room>)
--   KEYS[3] :r            zset  the bucket's rooms with members, all scored 0 (lexical paging)
--   KEYS[4] :c            hash  room id -> creation time
--   KEYS[5] :m            zset  <room>\31<user> for each member, scored 0 (a room's members
--                               are the range '[<room>\31' .. '(<room>\32')
--   KEYS[6] :w            zset  <user>\31<room>, scored 0 (a user's rooms in this bucket)
--   KEYS[7] :k            hash  <room>\31<user> -> the user's connections in the room
--   KEYS[8] :i:<instance> hash  sid -> user id, the instance's connections in this bucket's rooms
--   KEYS[9] :s:<instance> hash  sid -> its rooms in this bucket, joined by \31
-- ARGV[1] = operation, ARGV[2] = now ('' = Redis TIME), ARGV[3..] = operation args.
local ROOMS, CREATED, MEMBERS, WHERE = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local CONNS, INST, SIDS = KEYS[7], KEYS[8], KEYS[9]

local function item(sid, uid, room) return sid .. '\31' .. uid .. '\31' .. room end

local function rooms_of_sid(sid) return split(redis.call('HGET', SIDS, sid)) end

-- Record sid's rooms in this bucket (none: the sid is forgotten here).
local function set_rooms(sid, uid, rooms)
  if #rooms == 0 then
    redis.call('HDEL', SIDS, sid)
    redis.call('HDEL', INST, sid)
  else
    redis.call('HSET', SIDS, sid, table.concat(rooms, '\31'))
    redis.call('HSET', INST, sid, uid)
  end
end

-- Put sid of iid (not in rooms as another user) in room; returns 1 if the user is new to it.
local function enter(iid, room, uid, sid)
  local rooms = rooms_of_sid(sid)
  for _, r in ipairs(rooms) do
    if r == room then return 0 end
  end
  table.insert(rooms, room)
  set_rooms(sid, uid, rooms)
  digest_change(iid, item(sid, uid, room), 1)
  local pair = room .. '\31' .. uid
  if redis.call('HINCRBY', CONNS, pair, 1) > 1 then return 0 end
  redis.call('ZADD', MEMBERS, 0, pair)
  redis.call('ZADD', WHERE, 0, uid .. '\31' .. room)
  if redis.call('ZADD', ROOMS, 0, room) == 1 then redis.call('HSET', CREATED, room, now) end
  return 1
end

-- One connection of uid leaves room; returns 1 if the user left the room.
local function drop(room, uid)
  local pair = room .. '\31' .. uid
  if redis.call('HINCRBY', CONNS, pair, -1) > 0 then return 0 end
  redis.call('HDEL', CONNS, pair)
  redis.call('ZREM', MEMBERS, pair)
  redis.call('ZREM', WHERE, uid .. '\31' .. room)
  if redis.call('ZLEXCOUNT', MEMBERS, '[' .. room .. '\31', '(' .. room .. '\32') == 0 then
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

-- Take sid of iid out of all its rooms in this bucket; appends {room, uid, sid, left} to out.
-- (track: keep the instance's digest; a purge drops it whole)
local function drop_sid(iid, sid, uid, out, track)
  local rooms = rooms_of_sid(sid)
  set_rooms(sid, uid, {})
  for _, room in ipairs(rooms) do
    if track then digest_change(iid, item(sid, uid, room), -1) end
    report(out, room, uid, sid, drop(room, uid))
  end
end

if op == 'join' then
  -- ARGV: 3 instance, 4 room, 5 user, 6 sid, 7 ttl, 8 most rooms per user ('' = no limit),
  --       9 the user's rooms in the other buckets (read just before)
  -- Returns 1 (new to the room), 0, -1 (sid of another user) or {'too_many', rooms}.
  local iid, room, uid, sid = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local owner = redis.call('HGET', INST, sid)
  if owner and owner ~= uid then return -1 end
  if ARGV[8] ~= '' then
    local count = tonumber(ARGV[9]) + redis.call('ZLEXCOUNT', WHERE, '[' .. uid .. '\31',
      '(' .. uid .. '\32')
    if count >= tonumber(ARGV[8]) and redis.call('HEXISTS', CONNS, room .. '\31' .. uid) == 0 then
      return {'too_many', count}
    end
  end
  renew_lease(iid, ARGV[7])
  return enter(iid, room, uid, sid)

elseif op == 'leave' then
  -- ARGV: 3 instance, 4 room, 5 sid
  local iid, room, sid = ARGV[3], ARGV[4], ARGV[5]
  local uid = redis.call('HGET', INST, sid)
  if not uid then return 0 end
  local rooms, kept, found = rooms_of_sid(sid), {}, false
  for _, r in ipairs(rooms) do
    if r == room then found = true else table.insert(kept, r) end
  end
  if not found then return 0 end
  set_rooms(sid, uid, kept)
  digest_change(iid, item(sid, uid, room), -1)
  return drop(room, uid)

elseif op == 'leave_all' then
  -- ARGV: 3 instance, 4 sid; returns the flat {room, uid, sid, left} list
  local uid = redis.call('HGET', INST, ARGV[4])
  local out = {}
  if uid then drop_sid(ARGV[3], ARGV[4], uid, out, true) end
  return out

elseif op == 'check' then
  -- ARGV: 3 instance, 4.. sids left out. Returns the instance's digest in this bucket
  -- without their memberships: {count, sum}.
  local items = {}
  for i = 4, #ARGV do
    local sid = ARGV[i]
    local uid = redis.call('HGET', INST, sid)
    if uid then
      for _, room in ipairs(rooms_of_sid(sid)) do table.insert(items, item(sid, uid, room)) end
    end
  end
  return digest_without(ARGV[3], items)

elseif op == 'repair' then
  -- Put each listed sid of the instance in exactly the listed rooms of this bucket (see
  -- RoomsBackend.repair). ARGV: 3 instance, 4 ttl, then 3 per sid: sid, user ('' = none),
  -- its rooms in this bucket joined by \31. Returns the flat {room, uid, sid, left} list of
  -- what was removed.
  local iid, out = ARGV[3], {}
  renew_lease(iid, ARGV[4])
  for i = 5, #ARGV, 3 do
    local sid, uid = ARGV[i], ARGV[i + 1]
    local owner = redis.call('HGET', INST, sid)
    if owner and owner ~= uid then
      drop_sid(iid, sid, owner, out, true)
      owner = nil
    end
    if uid ~= '' then
      local want, wanted = split(ARGV[i + 2]), {}
      for _, room in ipairs(want) do wanted[room] = true end
      if owner then
        local rooms, kept = rooms_of_sid(sid), {}
        table.sort(rooms)
        for _, room in ipairs(rooms) do
          if wanted[room] then
            table.insert(kept, room)
          else
            digest_change(iid, item(sid, uid, room), -1)
            report(out, room, uid, sid, drop(room, uid))
          end
        end
        set_rooms(sid, uid, kept)
      end
      for _, room in ipairs(want) do enter(iid, room, uid, sid) end
    end
  end
  return out

elseif op == 'purge' then
  -- One batch of one expired instance (or of a forced one) in this bucket.
  -- ARGV: 3 instance, 4 forced ('1' | ''), 5 batch; KEYS[8], KEYS[9] = its hashes.
  -- Returns {now, 'more'|'done', removals...}.
  local target = ARGV[3]
  if ARGV[4] == '' and lease_live(target) then return {now, 'done'} end  -- it came back
  local out = {now, 'more'}
  local found = redis.call('HRANDFIELD', INST, tonumber(ARGV[5]), 'WITHVALUES')
  for i = 1, #found, 2 do drop_sid(target, found[i], found[i + 1], out, false) end
  if redis.call('EXISTS', INST) == 0 then
    redis.call('DEL', SIDS)
    redis.call('ZREM', LEASES, target)
    redis.call('HDEL', DIGESTS, target)
    out[2] = 'done'
  end
  return out

elseif op == 'rooms' then
  -- ARGV: 3 start ('-' or '(' .. cursor), 4 limit + 1; returns {room, user count, created, ...}
  local ids = redis.call('ZRANGE', ROOMS, ARGV[3], '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[4]))
  local out = {}
  for _, room in ipairs(ids) do
    table.insert(out, room)
    table.insert(out, redis.call('ZLEXCOUNT', MEMBERS, '[' .. room .. '\31', '(' .. room .. '\32'))
    table.insert(out, redis.call('HGET', CREATED, room))
  end
  return out
end
return redis.error_reply('unknown operation ' .. tostring(op))
