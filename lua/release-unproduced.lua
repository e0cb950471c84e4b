-- release-unproduced: give back the seats of admissions whose Kafka record is certainly not in
-- the log (redis-lua-kafka: the produce was refused or never sent; reconcile: the admission is
-- old, and neither the database nor the topic has it). Only users still marked producing are
-- released, so a seat is never released twice and never once its record was acknowledged.
--
-- KEYS[1]  {cpn:N}:state      hash (see admit-produce.lua)
-- KEYS[2]  {cpn:N}:users      set of admitted user ids
-- KEYS[3]  {cpn:N}:producing  sorted set of admissions not yet acknowledged by Kafka
-- ARGV     the user ids
--
-- Returns the number of seats released (issued was decremented by as many).
local released = 0
for i = 1, #ARGV do
  if redis.call('ZREM', KEYS[3], ARGV[i]) == 1 then
    redis.call('SREM', KEYS[2], ARGV[i])
    released = released + 1
  end
end
if released > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'issued', -released)
end
return released
