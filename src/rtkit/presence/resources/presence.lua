-- PresenceStore on Redis: one atomic transition per call, each call on ONE bucket.
-- rtkit/_core/resources/lease.lua is prepended: it defines op, now, nownum, LEASES, DIGESTS,
-- renew_lease, lease_live, split, the digest helpers and the 'lease' step of a purge pass.
--
-- A user's bucket b = crc32(user id) % 32; every key below is under the tag
-- {<prefix>presence:<b>}, and every key a call touches is in KEYS:
--   KEYS[1] :l            zset  instance id -> lease expiry (renewed in every bucket)
--   KEYS[2] :d            hash  instance id -> digest of its connections in this bucket
--                               (items <sid>\31<user>)
--   KEYS[3] :u            zset  the bucket's online users, all scored 0, one member each:
--                               <user>\31<first connection time>\31<username or ''>\31<sid>...
--                               (ids have no control characters, so members sort by user id
--                               and '[<user>\31' .. '(<user>\32' finds one user)
--   KEYS[4] :n            string connections in this bucket (deleted at 0)
--   KEYS[5] :m:<instance> hash  sid -> meta JSON (only connections that have meta)
--   KEYS[6..] :i:<instance>:<s> hash sid -> user id: the instance's connections of this
--                               bucket's users, spread over 32 small (listpack) hashes by
--                               s = crc32(sid) % 32; a user id that is a lowercase UUID
--                               is kept packed in 19 bytes (see unpack_user)
-- ARGV[1] = operation, ARGV[2] = now ('' = Redis TIME), ARGV[3..] = operation args.
--
-- Memory (100,000 users, one connection each, UUID ids): a :u member is ~90 bytes (a
-- 96-byte allocation) plus ~88 for its skiplist node, dict entry and table slot; an index
-- entry is the sid and the packed user id, ~49 bytes with the listpack's slack (~66 with
-- the UUID's 36 characters). The member must hold the user id as given (its order is the
-- listing's order), so with a username, a time and a sid it stays above the 76 bytes an
-- 80-byte allocation holds.
local USERS, CONNS, META = KEYS[3], KEYS[4], KEYS[5]

-- Index values: the caller (RedisPresenceBackend) packs a user id that is a lowercase UUID
-- into 19 bytes, its 128 bits in base 128, most significant first. The first byte is below
-- 4, a control character, which ids never contain, so a packed id is never taken for a raw
-- one; every byte is ASCII, so clients still read valid UTF-8. unpack_user gives the id
-- back: the first 3 digits make 4 hex digits, each next 4 make 7.

-- The 28 bits of the 4 base-128 digits of stored from i on.
local function word(stored, i)
  local a, b, c, d = string.byte(stored, i, i + 3)
  return ((a * 128 + b) * 128 + c) * 128 + d
end

local function unpack_user(stored)
  if #stored ~= 19 or string.byte(stored, 1) >= 32 then return stored end
  local a, b, c = string.byte(stored, 1, 3)
  local h = string.format('%04x%07x%07x%07x%07x', (a * 128 + b) * 128 + c, word(stored, 4),
    word(stored, 8), word(stored, 12), word(stored, 16))
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-' .. string.sub(h, 13, 16)
    .. '-' .. string.sub(h, 17, 20) .. '-' .. string.sub(h, 21)
end

-- The user sid is held for in the index hash ikey (nil if none).
local function owner_of(ikey, sid)
  local stored = redis.call('HGET', ikey, sid)
  if not stored then return nil end
  return unpack_user(stored)
end

-- The user's record {user, at, name, sids...} and its member (nil when offline).
local function find_user(uid)
  local member = redis.call('ZRANGE', USERS, '[' .. uid .. '\31', '(' .. uid .. '\32',
    'BYLEX', 'LIMIT', 0, 1)[1]
  if not member then return nil, nil end
  return split(member), member
end

local function store_user(old, rec)
  if old then redis.call('ZREM', USERS, old) end
  if rec then redis.call('ZADD', USERS, 0, table.concat(rec, '\31')) end
end

local function has_sid(rec, sid)
  for i = 4, #rec do
    if rec[i] == sid then return true end
  end
  return false
end

local function set_meta(sid, mode, meta)
  if mode == 'set' then
    redis.call('HSET', META, sid, meta)
  elseif mode == 'del' then
    redis.call('HDEL', META, sid)
  end
end

-- Index a new connection of iid (its user record is updated by the caller); stored is uid
-- as the index keeps it.
local function index(iid, ikey, sid, uid, stored)
  redis.call('HSET', ikey, sid, stored)
  redis.call('INCR', CONNS)
  digest_change(iid, sid .. '\31' .. uid, 1)
end

-- Take sid out of its user's record. Returns {user, sid, offline (0|1), has username (0|1),
-- username, instance}.
local function leave_user(iid, sid, uid)
  local rec, old = find_user(uid)
  local offline, name = 1, ''
  if rec then
    name = rec[3]
    local kept = {rec[1], rec[2], rec[3]}
    for i = 4, #rec do
      if rec[i] ~= sid then table.insert(kept, rec[i]) end
    end
    if #kept > 3 then
      offline = 0
      store_user(old, kept)
    else
      store_user(old, nil)
    end
  end
  local named = 0
  if name ~= '' then named = 1 end
  return {uid, sid, offline, named, name, iid}
end

local function count_conns(delta)
  if redis.call('INCRBY', CONNS, delta) <= 0 then redis.call('DEL', CONNS) end
end

-- Remove a connection of iid and keep the instance's digest.
local function remove(iid, ikey, sid, uid)
  digest_change(iid, sid .. '\31' .. uid, -1)
  redis.call('HDEL', ikey, sid)
  redis.call('HDEL', META, sid)
  count_conns(-1)
  return leave_user(iid, sid, uid)
end

if op == 'connect' then
  -- ARGV: 3 instance, 4 user, 5 sid, 6 has username, 7 username, 8 meta mode (''|set|del),
  --       9 meta, 10 ttl, 11 user as the index keeps it; KEYS[6] = the sid's index hash
  local iid, uid, sid, ikey = ARGV[3], ARGV[4], ARGV[5], KEYS[6]
  local owner = owner_of(ikey, sid)
  if owner and owner ~= uid then return {'conflict_user'} end
  local rec, old = find_user(uid)
  if not owner and rec and has_sid(rec, sid) then return {'conflict_sid'} end
  renew_lease(iid, ARGV[10])
  local online, changed = 0, false
  if not rec then
    rec, online, changed = {uid, now, ''}, 1, true
  end
  if not owner then
    table.insert(rec, sid)
    index(iid, ikey, sid, uid, ARGV[11])
    changed = true
  end
  if ARGV[6] == '1' and rec[3] ~= ARGV[7] then
    rec[3], changed = ARGV[7], true
  end
  if changed then store_user(old, rec) end
  set_meta(sid, ARGV[8], ARGV[9])
  return {'ok', online, now}

elseif op == 'disconnect' then
  -- ARGV: 3 instance, 4 sid; KEYS[6] = the sid's index hash in this bucket
  local uid = owner_of(KEYS[6], ARGV[4])
  if not uid then return {} end
  local out = remove(ARGV[3], KEYS[6], ARGV[4], uid)
  table.insert(out, now)
  return out

elseif op == 'check' then
  -- ARGV: 3 instance, 4.. sids left out; KEYS[6..] = their index hashes, in order.
  -- Returns the instance's digest in this bucket without them: {count, sum}.
  local items = {}
  for k = 4, #ARGV do
    local uid = owner_of(KEYS[k + 2], ARGV[k])
    if uid then table.insert(items, ARGV[k] .. '\31' .. uid) end
  end
  return digest_without(ARGV[3], items)

elseif op == 'repair' then
  -- Make the instance hold exactly the given connections in this bucket (see
  -- PresenceBackend.repair). ARGV: 3 instance, 4 ttl, then 7 per sid: sid, user ('' = none
  -- in this bucket), user as the index keeps it, has username, username, meta mode
  -- (set|del), meta; KEYS[5 + j] = the index hash of the j-th sid. Returns {now,
  -- {removals...}, {users who came online}}.
  local iid = ARGV[3]
  renew_lease(iid, ARGV[4])
  local removed, online, j = {}, {}, 0
  for i = 5, #ARGV, 7 do
    j = j + 1
    local ikey, sid, uid = KEYS[5 + j], ARGV[i], ARGV[i + 1]
    local owner = owner_of(ikey, sid)
    if owner and owner ~= uid then
      for _, v in ipairs(remove(iid, ikey, sid, owner)) do table.insert(removed, v) end
      owner = nil
    end
    if uid ~= '' then
      local rec, old = find_user(uid)
      local changed = false
      if not owner and not (rec and has_sid(rec, sid)) then
        if not rec then
          rec = {uid, now, ''}
          table.insert(online, uid)
        end
        table.insert(rec, sid)
        index(iid, ikey, sid, uid, ARGV[i + 2])
        owner, changed = uid, true
      end
      if owner then
        if ARGV[i + 3] == '1' and rec[3] == '' then
          rec[3], changed = ARGV[i + 4], true
        end
        if changed then store_user(old, rec) end
        set_meta(sid, ARGV[i + 5], ARGV[i + 6])
      end
    end
  end
  return {now, removed, online}

elseif op == 'purge' then
  -- One batch of one expired instance (or of a forced one) in this bucket.
  -- ARGV: 3 instance, 4 forced ('1' | ''), 5 batch; KEYS[5] = its meta, KEYS[6..] = all
  -- its index hashes. Returns {now, 'more'|'done', removals...}.
  local target = ARGV[3]
  if ARGV[4] == '' and lease_live(target) then return {now, 'done'} end  -- it came back
  -- (whole index hashes at a time; the digest goes when the instance is gone)
  local out, budget, removed = {now, 'more'}, tonumber(ARGV[5]), 0
  for k = 6, #KEYS do
    if budget <= 0 then break end
    local found = redis.call('HGETALL', KEYS[k])
    for i = 1, #found, 2 do
      redis.call('HDEL', META, found[i])
      local gone = leave_user(target, found[i], unpack_user(found[i + 1]))
      for _, v in ipairs(gone) do table.insert(out, v) end
    end
    if #found > 0 then redis.call('DEL', KEYS[k]) end
    removed = removed + #found / 2
    budget = budget - #found / 2
  end
  if removed > 0 then count_conns(-removed) end
  if budget <= 0 then return out end
  redis.call('ZREM', LEASES, target)
  redis.call('HDEL', DIGESTS, target)
  redis.call('DEL', META)
  out[2] = 'done'
  return out
end
return redis.error_reply('unknown operation ' .. tostring(op))
