-- release-held: settle the Redis side of a Kafka dead letter that was replayed or discarded (the
-- topic holds the dead letter itself and its settlement record): remove its user's held entry and,
-- for a discard, give back the user's seat and admission.
--
-- KEYS[1]  {cpn:N}:state  hash (see admit-produce.lua): issued is decremented with a release
-- KEYS[2]  {cpn:N}:users  set of admitted user ids
-- KEYS[3]  {cpn:N}:held   hash: user -> "kafka:<partition-offset>" (the Kafka worker's)
-- ARGV[1]  user id
-- ARGV[2]  the held index value of this dead letter ("kafka:<partition-offset>"): only that entry
--          is removed, so a later dead letter of the same user keeps theirs
-- ARGV[3]  '1' to release the seat (the caller checked that the dead letter holds one and the
--          user has no row), '0' to keep it (a replay: the record is back on the topic)
--
-- Returns:
--   1  RELEASED  the user was admitted and is no longer (issued decremented): they may issue again
--   0  KEPT      no seat was given back (not asked, or the user was not admitted)
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[3], ARGV[1]) end
if ARGV[3] ~= '1' or redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'issued', -1) end
return 1
