-- dead-letter: move one stream entry the worker cannot persist to the campaign's dead-letter
-- stream (fields _source, _reason, _deliveries, _failed + the entry's own) and acknowledge it,
-- atomically: it is never acked without being kept, and it never blocks the rest of the stream.
-- The entry's user, when admitted, is recorded in the held index, so the status route answers
-- HELD without reading the dead letters (replay.lua and discard.lua remove it). A user who is not
-- admitted (an entry nobody's admission wrote) is left out: they may be admitted later, and their
-- own issuance must not read HELD because of it.
--
-- KEYS[1]  {cpn:N}:stream  the issuance stream
-- KEYS[2]  {cpn:N}:dead    the dead-letter stream
-- KEYS[3]  {cpn:N}:held    hash: user -> "stream:<dead-letter id>" (or "kafka:<id>", the Kafka worker's)
-- KEYS[4]  {cpn:N}:users   set of admitted user ids
-- ARGV[1]  consumer group name
-- ARGV[2]  consumer name: only an entry still pending for this consumer is moved
-- ARGV[3]  id of the entry in the issuance stream
-- ARGV[4]  reason (human-readable)
-- ARGV[5]  delivery count at the time of the decision
-- ARGV[6]  now, ms since epoch
-- ARGV[7..] the entry's original field/value pairs (c, u, t, r normally), copied as is
--
-- Returns:
--   id  DEAD_LETTERED  the new dead-letter entry id (the source entry is acked; its user, when
--                      the entry has a u that is admitted, is in the held index)
--   0   NOT_PENDING    the entry is no longer pending for this consumer (another worker claimed
--                      or settled it); nothing changed
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #pending == 0 then return 0 end
-- Bookkeeping fields start with '_' so replay can tell them from the entry's own fields.
local fields = { '_source', ARGV[3], '_reason', ARGV[4], '_deliveries', ARGV[5], '_failed', ARGV[6] }
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
for i = 7, #ARGV - 1, 2 do
  if ARGV[i] == 'u' and ARGV[i + 1] ~= '' and redis.call('SISMEMBER', KEYS[4], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i + 1], 'stream:' .. id)
  end
end
return id
