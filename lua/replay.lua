-- replay: put one dead letter back on the issuance stream (its original fields, a new id and a
-- fresh delivery count), delete it from the dead-letter stream and settle its user's HELD,
-- atomically: however many replays of one id race, one finds it and the others find nothing.
--
-- KEYS[1]  {cpn:N}:dead    the dead-letter stream
-- KEYS[2]  {cpn:N}:stream  the issuance stream
-- KEYS[3]  {cpn:N}:held    hash: user -> "stream:<dead-letter id>" (dead-letter.lua)
-- ARGV[1]  id of the dead-letter entry
--
-- Returns:
--   id  REPLAYED   the new issuance stream entry id (the user's held entry, if it named this
--                  dead letter, is removed: the status is PENDING again)
--   0   NOT_FOUND  no such dead letter (already replayed or discarded, or a wrong id)
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local src = found[1][2]
local fields = {}
local user = ''
for i = 1, #src, 2 do
  -- Copy the entry's own fields; the '_' bookkeeping of dead-letter.lua stays behind.
  if string.sub(src[i], 1, 1) ~= '_' then
    fields[#fields + 1] = src[i]
    fields[#fields + 1] = src[i + 1]
    if src[i] == 'u' then user = src[i + 1] end
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
-- Only the entry this dead letter wrote: a later dead letter of the same user keeps theirs.
if user ~= '' and redis.call('HGET', KEYS[3], user) == 'stream:' .. ARGV[1] then redis.call('HDEL', KEYS[3], user) end
return id
