-- The packets kept after an offset, or {0} when one of them was trimmed already
-- (then a replay would lose packets: no recovery) or the offset is not one of this stream.
-- KEYS[1]: the namespace's packet stream
-- ARGV[1]: the offset (exclusive), ARGV[2]: at most this many packets
-- Returns {1, id1, head1, tail1, id2, ...} or {0}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function after(a, b) -- a > b
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
if not parse(ARGV[1]) then return {0} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] == '0-0' then return {1} end
  return {0}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
if after(ARGV[1], last) or after(deleted, ARGV[1]) then return {0} end
local out = {1}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])) do
  local fields = entry[2]
  local head, tail = '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'h' then head = fields[i + 1] end
    if fields[i] == 't' then tail = fields[i + 1] end
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = head
  out[#out + 1] = tail
end
return out
