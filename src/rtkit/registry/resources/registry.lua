-- rtkit ServiceRegistry: every per-service operation in one script, so they share the
-- pruning code and each is one atomic round trip on the service's slot.
--
-- Model (Keyspace entity keys: each service has its own hash tag, so services spread
-- over a Redis Cluster; the service list lives on the registry's shared tag and is kept by
-- the caller, see backends/redis.py):
--   KEYS[1] {<prefix>registry:<name>}:svc    sorted set: instance id -> expiry (epoch s)
--   KEYS[2] {<prefix>registry:<name>}:meta   hash: instance id -> "<registered_at> <json>"
-- Changes are announced on ARGV[4] with ARGV[3] (PUBLISH, or SPUBLISH on a cluster: the
-- shard channel then shares the service's tag).
--
-- ARGV[1] op: upsert | remove | live | count
-- ARGV[2] now in epoch seconds, or "" to use the Redis server's clock (TIME)
-- ARGV[3] the publish command, ARGV[4] the change channel
-- upsert: ARGV[5] id, ARGV[6] record json, ARGV[7] ttl; returns {added, expiry as text}
-- remove: ARGV[5] id; returns 1 if it was live
-- live: returns expiry, "<registered_at> <record json>" pairs
-- count: returns the number of live instances

local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local zkey, hkey = KEYS[1], KEYS[2]
local publish, chan = ARGV[3], ARGV[4]

local function prune()
    local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
    if #dead > 0 then
        redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
        for i = 1, #dead, 1000 do
            redis.call('HDEL', hkey, unpack(dead, i, math.min(i + 999, #dead)))
        end
        redis.call(publish, chan, 'changed')
    end
    local left = redis.call('ZCARD', zkey)
    if left == 0 then
        redis.call('DEL', zkey, hkey)
    end
    return left
end

local left = prune()
if op == 'count' then
    return left
end

if op == 'upsert' then
    local id, ttl = ARGV[5], tonumber(ARGV[7])
    local expiry = now + ttl
    local added = redis.call('ZADD', zkey, expiry, id)
    if added == 1 then
        redis.call('HSET', hkey, id, string.format('%.6f', now) .. ' ' .. ARGV[6])
        redis.call(publish, chan, 'changed')
    end
    -- idle keys die on their own: keep them a minute longer than the longest ttl
    local keep = math.ceil(ttl) + 60
    if redis.call('TTL', zkey) < keep then
        redis.call('EXPIRE', zkey, keep)
        redis.call('EXPIRE', hkey, keep)
    end
    return {added, string.format('%.17g', expiry)}
elseif op == 'remove' then
    local removed = redis.call('ZREM', zkey, ARGV[5])
    if removed == 1 then
        redis.call('HDEL', hkey, ARGV[5])
        redis.call(publish, chan, 'changed')
        if redis.call('ZCARD', zkey) == 0 then
            redis.call('DEL', zkey, hkey)
        end
    end
    return removed
elseif op == 'live' then
    local live = redis.call('ZRANGEBYSCORE', zkey, string.format('(%.17g', now), '+inf', 'WITHSCORES')
    local out = {}
    if #live == 0 then
        return out
    end
    local ids = {}
    for i = 1, #live, 2 do
        ids[#ids + 1] = live[i]
    end
    local data = {}
    for i = 1, #ids, 1000 do
        local part = redis.call('HMGET', hkey, unpack(ids, i, math.min(i + 999, #ids)))
        for j = 1, #part do
            data[#data + 1] = part[j]
        end
    end
    for i = 1, #ids do
        if data[i] then
            out[#out + 1] = live[2 * i]
            out[#out + 1] = data[i]
        end
    end
    return out
end
return redis.error_reply('unknown registry op ' .. tostring(op))
