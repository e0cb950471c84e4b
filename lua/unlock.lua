-- unlock: release a redis-lock lock only if we still own it (the token matches), so a holder
-- whose lock expired never deletes the next holder's lock.
--
-- KEYS[1]  {cpn:N}:lock
-- ARGV[1]  the holder's random token
--
-- Returns:
--    1  RELEASED   the lock was ours and is deleted
--    0  NOT_OWNER  the lock expired or belongs to someone else; nothing changed
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
