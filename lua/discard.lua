-- discard: settle one dead letter for good without persisting it, atomically: delete it from the
-- dead-letter stream, give back its user's seat and admission (only when the caller checked that
-- the user has no row: a row is the seat), settle the user's HELD, and keep a record of the
-- discard in a capped stream so the dead-letter list can show it. A discard and a replay of one
-- id race harmlessly: whichever runs first finds the entry, the other finds nothing.
--
-- KEYS[1]  {cpn:N}:dead       the dead-letter stream
-- KEYS[2]  {cpn:N}:users      set of admitted user ids
-- KEYS[3]  {cpn:N}:state      hash (see admit-enqueue.lua): issued is decremented with a release
-- KEYS[4]  {cpn:N}:held       hash: user -> "stream:<dead-letter id>" (dead-letter.lua)
-- KEYS[5]  {cpn:N}:discarded  capped stream of discarded dead letters
-- ARGV[1]  id of the dead-letter entry
-- ARGV[2]  user the caller checked, '' for none: the seat is released only when it is the
--          entry's user (so the check was about the right user)
-- ARGV[3]  now, ms since epoch
-- ARGV[4]  approximate length cap of the discarded stream (XADD MAXLEN ~)
-- ARGV[5]  ms the discarded stream lives after its latest discard
--
-- Returns:
--   2  RELEASED   discarded; the user was admitted and is no longer (issued decremented): they may issue again
--   1  DISCARDED  discarded; no seat was given back (the user has a row, was not admitted, or none was named)
--   0  NOT_FOUND  no such dead letter (already replayed or discarded, or a wrong id); nothing changed
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local src = found[1][2]
local user = ''
for i = 1, #src, 2 do
  if src[i] == 'u' then user = src[i + 1] end
end
redis.call('XDEL', KEYS[1], ARGV[1])
local released = 0
if user ~= '' and user == ARGV[2] and redis.call('SREM', KEYS[2], user) == 1 then
  released = 1
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HINCRBY', KEYS[3], 'issued', -1) end
end
if user ~= '' and redis.call('HGET', KEYS[4], user) == 'stream:' .. ARGV[1] then redis.call('HDEL', KEYS[4], user) end
-- '_' fields are bookkeeping, as in the dead-letter stream; the dead letter's own follow.
local record = { '_dead', ARGV[1], '_discarded', ARGV[3], '_released', tostring(released) }
for i = 1, #src do record[#record + 1] = src[i] end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', unpack(record))
redis.call('PEXPIRE', KEYS[5], ARGV[5])
return released + 1
