-- rtkit ServiceRegistry: every operation in one script, so they share the pruning code
-- and each is one atomic round trip.
--
-- Model (all keys share the hash tag {registry}, so the script stays on one cluster slot;
-- "counts" derives per-service keys from ARGV[3] for that reason):
--   <base>:names        set of service names that may have live instances
--   <base>:svc:<name>   sorted set: instance id -> expiry (epoch seconds)
--   <base>:meta:<name>  hash: instance id -> "<registered_at> <record json>"
-- Changes are announced on the channel <ARGV[4]><name>.
--
-- KEYS[1] names set, KEYS[2] service sorted set, KEYS[3] service hash (unused by "counts")
-- ARGV[1] op: upsert | remove | live | counts
-- ARGV[2] now in epoch seconds, or "" to use the Redis server's clock (TIME)
-- ARGV[3] key base, ARGV[4] channel base
-- "live" returns expiry, "<registered_at> <record json>" pairs; "counts" name, count pairs.
-- ARGV[5] service name; upsert: ARGV[6] id, ARGV[7] record json, ARGV[8] ttl; remove: ARGV[6] id

local op = ARGV[1]
local now = tonumber(ARGV[2])
if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local base, chan = ARGV[3], ARGV[4]

local function prune(name, zkey, hkey)
    local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
    if #dead > 0 then
        redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
        for i = 1, #dead, 1000 do
            redis.call('HDEL', hkey, unpack(dead, i, math.min(i + 999, #dead)))
        end
        redis.call('PUBLISH', chan .. name, 'changed')
    end
    local left = redis.call('ZCARD', zkey)
    if left == 0 then
        redis.call('DEL', zkey, hkey)
        redis.call('SREM', KEYS[1], name)
    end
    return left
end

if op == 'counts' then
    local out = {}
    for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
        local left = prune(name, base .. ':svc:' .. name, base .. ':meta:' .. name)
        if left > 0 then
            out[#out + 1] = name
            out[#out + 1] = left
        end
    end
    return out
end

local name, zkey, hkey = ARGV[5], KEYS[2], KEYS[3]
prune(name, zkey, hkey)

if op == 'upsert' then
    local id, ttl = ARGV[6], tonumber(ARGV[8])
    local added = redis.call('ZADD', zkey, now + ttl, id)
    if added == 1 then
        redis.call('HSET', hkey, id, string.format('%.6f', now) .. ' ' .. ARGV[7])
        redis.call('SADD', KEYS[1], name)
        redis.call('PUBLISH', chan .. name, 'changed')
    end
    -- idle keys die on their own: keep them a minute longer than the longest ttl
    local keep = math.ceil(ttl) + 60
    if redis.call('TTL', zkey) < keep then
        redis.call('EXPIRE', zkey, keep)
        redis.call('EXPIRE', hkey, keep)
    end
    return added
elseif op == 'remove' then
    local removed = redis.call('ZREM', zkey, ARGV[6])
    if removed == 1 then
        redis.call('HDEL', hkey, ARGV[6])
        redis.call('PUBLISH', chan .. name, 'changed')
        if redis.call('ZCARD', zkey) == 0 then
            redis.call('DEL', zkey, hkey)
            redis.call('SREM', KEYS[1], name)
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
