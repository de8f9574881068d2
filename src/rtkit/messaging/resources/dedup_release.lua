-- Forget a claim whose handler failed, unless the id was completed meanwhile.
-- KEYS[1] the id's key. Returns 1 if a claim was removed.
if redis.call('GET', KEYS[1]) == 'busy' then
  return redis.call('DEL', KEYS[1])
end
return 0
