-- Claim a message id for handling.
-- KEYS[1] the id's key; ARGV[1] the lease in milliseconds.
-- Returns "new" (claimed now), "busy" (someone is handling it) or "done".
if redis.call('SET', KEYS[1], 'busy', 'NX', 'PX', ARGV[1]) then
  return 'new'
end
local state = redis.call('GET', KEYS[1])
if state == false then
  redis.call('SET', KEYS[1], 'busy', 'PX', ARGV[1])
  return 'new'
end
return state
