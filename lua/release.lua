-- release: undo one admission of admit.lua when the database refused or failed the insert
-- (redis-lua-sync), so Redis and the database agree again.
--
-- KEYS[1]  {cpn:N}:state  hash (see admit.lua)
-- KEYS[2]  {cpn:N}:users  set of admitted user ids
-- ARGV[1]  user id
-- ARGV[2]  '1' when the database said the stock is gone: also pin issued to total, so Redis stops
--          admitting users the database would refuse; '0' otherwise
--
-- Returns:
--    1  RELEASED      the user was removed and issued decremented
--    0  NOT_ADMITTED  the user was not in the set (nothing to undo; issued untouched)
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then
  local total = redis.call('HGET', KEYS[1], 'total')
  if total then redis.call('HSET', KEYS[1], 'issued', total) end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'issued', -1)
end
return 1
