-- admit-produce: decide a batch of issue attempts on one campaign atomically, in order, each as
-- if it ran alone (window, then duplicate, then stock); record each admitted user and mark it
-- "producing" until its Kafka record is acknowledged. Used by redis-lua-kafka: the API then
-- produces the admitted issuances to the topic and answers 202 only once Kafka acknowledged
-- them (then drops the mark), releases the seat when the produce certainly failed
-- (release-unproduced.lua), and keeps the mark when the outcome is unknown, for reconcile.
--
-- KEYS[1]  {cpn:N}:state      hash: total, starts, ends (ms since epoch, half-open window), issued, expireat
-- KEYS[2]  {cpn:N}:users      set of admitted user ids
-- KEYS[3]  {cpn:N}:producing  sorted set: user id → admitted at (ms), for records not yet acknowledged
-- then one pair per attempt, in arrival order:
-- ARGV[1+2i]  user id
-- ARGV[2+2i]  now, ms since epoch (the admission instant chosen by the API; becomes issued_at)
--
-- Returns an array with one code per attempt, in the same order:
--    1  ADMITTED         user added, issued incremented, marked producing
--    0  MISSING          no state for this campaign (every code is 0): rebuild it, then retry
--   -1  ALREADY_ISSUED   the user is in the set (also when admitted earlier in this batch)
--   -2  SOLD_OUT         issued >= total
--   -3  WINDOW_NOT_OPEN  now < starts
--   -4  WINDOW_CLOSED    now >= ends
--- @include "includes/admit-batch.lua"
return admit_batch(KEYS[1], KEYS[2], #ARGV / 2, function(i) return ARGV[2 * i - 1], ARGV[2 * i] end, function(_, user, at)
  redis.call('ZADD', KEYS[3], at, user)
end, function(expireat)
  -- The first mark creates the set: give it the campaign's retention like the state hash.
  redis.call('PEXPIREAT', KEYS[3], expireat)
end)
