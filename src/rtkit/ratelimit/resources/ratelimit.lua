-- rtkit rate limiter: decide one hit on every limit of a key, atomically.
-- A line-by-line port of gcra(), window() and counter() in rtkit/ratelimit/_algorithms.py;
-- all times are whole microseconds (exact integers in Lua's doubles).
--
-- KEYS[i]   the state of limit i (all share one hash tag: one cluster slot)
-- ARGV[1]   now in microseconds, or '' to read the time from Redis (TIME)
-- ARGV[2]   cost;  ARGV[3] '1' to count the hit, '0' to only peek
-- ARGV[4..] five values per limit: algorithm ('g', 'w', 'c'), amount, period_us,
--           capacity, emission interval in us (gcra)
-- Returns five integers per limit: allowed (1/0), limit, remaining, reset_us, retry_us.
-- The hit is recorded under every limit only if every limit allows it.

local floor, ceil, max = math.floor, math.ceil, math.max
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local count = ARGV[3] == '1'

local out = {}
local plan = {}
local all_allowed = true

for i = 1, #KEYS do
  local key = KEYS[i]
  local a = 3 + (i - 1) * 5
  local algo = ARGV[a + 1]
  local amount = tonumber(ARGV[a + 2])
  local period = tonumber(ARGV[a + 3])
  local capacity = tonumber(ARGV[a + 4])
  local allowed, remaining, reset, retry
  if algo == 'g' then
    local interval = tonumber(ARGV[a + 5])
    local tat = tonumber(redis.call('GET', key) or '')
    local tolerance = interval * capacity
    local base = now
    if tat and tat >= now then base = tat end
    local new_tat = base + cost * interval
    allowed = new_tat - now <= tolerance
    local used = base
    if allowed and count then used = new_tat end
    remaining = max(0, floor((tolerance - (used - now)) / interval))
    reset = used - now
    retry = 0
    if not allowed then retry = new_tat - tolerance - now end
    plan[i] = {new_tat, new_tat}
  elseif algo == 'w' then
    local at = now
    local size = redis.call('LLEN', key)
    if size > 0 then
      local newest = tonumber(redis.call('LINDEX', key, -1))
      if newest > at then at = newest end
      local cutoff = at - period
      if newest <= cutoff then
        redis.call('DEL', key)
        size = 0
      elseif tonumber(redis.call('LINDEX', key, 0)) <= cutoff then
        -- binary search the first entry still inside the window, drop those before it
        local lo, hi = 1, size - 1
        while lo < hi do
          local mid = floor((lo + hi) / 2)
          if tonumber(redis.call('LINDEX', key, mid)) <= cutoff then lo = mid + 1 else hi = mid end
        end
        redis.call('LTRIM', key, lo, -1)
        size = size - lo
      end
    end
    allowed = size + cost <= amount
    local counted = allowed and count
    remaining = amount - size
    if counted then remaining = remaining - cost end
    if counted then
      reset = period
    elseif size > 0 then
      reset = tonumber(redis.call('LINDEX', key, size - 1)) + period - at
    else
      reset = 0
    end
    retry = 0
    if not allowed then
      retry = tonumber(redis.call('LINDEX', key, size + cost - amount - 1)) + period - at
    end
    plan[i] = {at, at + period}
  else
    local index = floor(now / period)
    local at = now
    local current, previous = 0, 0
    local stored = redis.call('GET', key)
    if stored then
      local si, sc, sp = string.match(stored, '^(%d+):(%d+):(%d+)$')
      si, sc, sp = tonumber(si), tonumber(sc), tonumber(sp)
      if si > index then
        index = si
        at = si * period
      end
      if si == index then
        current, previous = sc, sp
      elseif si == index - 1 then
        previous = sc
      end
    end
    local elapsed = at - index * period
    local weighted = previous * (period - elapsed) / period
    allowed = weighted + current + cost <= amount
    local new_current = current
    if allowed and count then new_current = current + cost end
    remaining = max(0, floor(amount - new_current - weighted))
    if new_current > 0 then
      reset = 2 * period - elapsed
    elseif previous > 0 then
      reset = period - elapsed
    else
      reset = 0
    end
    if allowed then
      retry = 0
    else
      local room = amount - cost
      if current <= room then
        retry = ceil(period - (room - current) * period / previous) - elapsed
      else
        retry = period - elapsed + ceil(period - room * period / current)
      end
      retry = max(1, retry)
    end
    local expires = index * period + period
    if new_current > 0 then expires = expires + period end
    plan[i] = {string.format('%.0f:%.0f:%.0f', index, new_current, previous), expires}
  end
  if not allowed then all_allowed = false end
  local o = (i - 1) * 5
  out[o + 1] = allowed and 1 or 0
  out[o + 2] = capacity
  if algo ~= 'g' then out[o + 2] = amount end
  out[o + 3] = remaining
  out[o + 4] = reset
  out[o + 5] = retry
end

if count and all_allowed then
  for i = 1, #KEYS do
    local key = KEYS[i]
    local algo = ARGV[3 + (i - 1) * 5 + 1]
    local value, expires = plan[i][1], plan[i][2]
    local ttl_ms = floor((expires - now) / 1000) + 1
    if algo == 'w' then
      local stamp = string.format('%.0f', value)
      local left = cost
      while left > 0 do
        local chunk = {}
        for j = 1, math.min(left, 1000) do chunk[j] = stamp end
        redis.call('RPUSH', key, unpack(chunk))
        left = left - #chunk
      end
      redis.call('PEXPIRE', key, ttl_ms)
    elseif algo == 'g' then
      redis.call('SET', key, string.format('%.0f', value), 'PX', ttl_ms)
    else
      redis.call('SET', key, value, 'PX', ttl_ms)
    end
  end
end

return out
