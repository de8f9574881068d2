-- The packets kept after an offset, or {0} when the offset is no longer (or never was)
-- in the stream: trimming removes the oldest first, so while the offset is there, every
-- packet after it is there too; once it is gone, a replay could lose packets.
-- KEYS[1]: the namespace's packet stream
-- ARGV[1]: the offset (exclusive), ARGV[2]: at most this many packets
-- Returns {1, id1, head1, tail1, id2, ...} or {0}.
if not string.match(ARGV[1], '^%d+%-%d+$') then return {0} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] == '0-0' then return {1} end
  return {0}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local fields = {}
for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
local kept
if ARGV[1] == fields['last-generated-id'] then
  kept = true
elseif ARGV[1] == '0-0' then
  kept = fields['entries-added'] == fields['length']
else
  kept = #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 1
end
if not kept then return {0} end
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
