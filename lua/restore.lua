-- restore: create a campaign's admission state if (and only if) it is missing — at campaign
-- creation (no users) or when rebuilding from the database after Redis lost it. The caller has
-- loaded the admitted users (issued rows + queued + dead-lettered entries) into a temporary set
-- beforehand; the count is that set's size, so Redis never admits more than the stock.
--
-- KEYS[1]  {cpn:N}:state        hash to create: total, starts, ends, issued, expireat, rebuilt,
--                               primary (this server's run id: admissions check it)
-- KEYS[2]  {cpn:N}:users        set of admitted user ids (replaced by the temporary set)
-- KEYS[3]  {cpn:N}:users:load:* temporary set filled by the caller (may not exist: no users)
-- ARGV[1]  total quantity
-- ARGV[2]  window start, ms since epoch
-- ARGV[3]  window end (exclusive), ms since epoch
-- ARGV[4]  expire at, ms since epoch (retention after the window ends)
-- ARGV[5]  rebuilt at, ms since epoch: when Redis had lost the state (0 at campaign creation).
--          An API whose admission call lost its answer reads it: a state rebuilt since the
--          attempt cannot tell whether that attempt was admitted.
--
-- Returns:
--    n >= 0  CREATED  state created with issued = n (the number of admitted users)
--   -1       EXISTS   state already present (another instance restored it first); nothing changed
--- @include "includes/run-id.lua"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return -1
end
redis.call('DEL', KEYS[2])
local issued = 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
  redis.call('PEXPIREAT', KEYS[2], ARGV[4])
  issued = redis.call('SCARD', KEYS[2])
end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'starts', ARGV[2], 'ends', ARGV[3], 'issued', issued, 'expireat', ARGV[4], 'rebuilt', ARGV[5], 'primary', server_run_id())
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return issued
