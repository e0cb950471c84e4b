-- settle: a campaign state created or last settled on another server (admit_batch's UNSETTLED: a
-- promoted replica after a failover, or a restart) is made this server's. The caller has loaded
-- everyone who holds a seat in the database or the queue (issued rows + queued + dead-lettered
-- entries, or the Kafka topic's) into a temporary set; each of them missing from the admitted users
-- is added and counted, so the stock they hold is never handed out again, and the state records
-- this server's run id. Nobody is removed: a seat this server knows of and the database does not
-- is an admission still on its way (or `reconcile`'s to report).
--
-- KEYS[1]  {cpn:N}:state        hash: issued, expireat, primary
-- KEYS[2]  {cpn:N}:users        set of admitted user ids
-- KEYS[3]  {cpn:N}:users:load:* temporary set filled by the caller (deleted here)
--
-- Returns:
--    n >= 0  SETTLED  n users were missing and are admitted now
--   -1       MISSING  no state (the next admission rebuilds it from the same sources)
--- @include "includes/run-id.lua"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])
  return -1
end
local missing = redis.call('SDIFF', KEYS[3], KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[1], 'primary', server_run_id())
if #missing == 0 then return 0 end
for i = 1, #missing, 1000 do
  redis.call('SADD', KEYS[2], unpack(missing, i, math.min(i + 999, #missing)))
end
redis.call('PEXPIREAT', KEYS[2], redis.call('HGET', KEYS[1], 'expireat'))
redis.call('HINCRBY', KEYS[1], 'issued', #missing)
return #missing
