-- replay: put one dead letter back on the issuance stream (its original fields, a new id and a
-- fresh delivery count) and delete it from the dead-letter stream, atomically.
--
-- KEYS[1]  {cpn:N}:dead    the dead-letter stream
-- KEYS[2]  {cpn:N}:stream  the issuance stream
-- ARGV[1]  id of the dead-letter entry
--
-- Returns:
--   id  REPLAYED   the new issuance stream entry id
--   0   NOT_FOUND  no such dead letter (already replayed, or a wrong id)
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local src = found[1][2]
local fields = {}
for i = 1, #src, 2 do
  -- Copy the entry's own fields; the '_' bookkeeping of dead-letter.lua stays behind.
  if string.sub(src[i], 1, 1) ~= '_' then
    fields[#fields + 1] = src[i]
    fields[#fields + 1] = src[i + 1]
  end
end
local id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
