-- extend: push a redis-lock lock's expiry out while its holder is still working (watchdog),
-- only if we still own it.
--
-- KEYS[1]  {cpn:N}:lock
-- ARGV[1]  the holder's random token
-- ARGV[2]  new time to live, ms
--
-- Returns:
--    1  EXTENDED   the lock was ours; its TTL is now ARGV[2]
--    0  NOT_OWNER  the lock expired or belongs to someone else; nothing changed
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
