-- Keep a packet for connection state recovery and publish it, in one atomic step.
-- The stream id is the packet's offset: it goes inside the published message (between
-- head and tail), so every instance delivers the packets in the stream's order.
-- KEYS[1]: the namespace's packet stream
-- ARGV[1]: max packets kept (trimmed approximately), ARGV[2]: the pub/sub channel,
-- ARGV[3]: the message before its offset, ARGV[4]: the message after its offset
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'h', ARGV[3], 't', ARGV[4])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. '"' .. id .. '"' .. ARGV[4])
return id
