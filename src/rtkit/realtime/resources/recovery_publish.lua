-- Keep packets for connection state recovery and publish them, in order, in one atomic step.
-- A packet's stream id is its offset: it goes inside the published message (between its
-- head and tail), so every instance delivers the packets in the stream's order.
-- KEYS[1]: the namespace's packet stream
-- ARGV[1]: max packets kept (trimmed approximately), ARGV[2]: the pub/sub channel,
-- then per packet two: the message before its offset, the message after it
local id
for i = 3, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'h', ARGV[i], 't', ARGV[i + 1])
  redis.call('PUBLISH', ARGV[2], ARGV[i] .. '"' .. id .. '"' .. ARGV[i + 1])
end
return id
