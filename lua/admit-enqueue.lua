-- admit-enqueue: decide a batch of issue attempts on one campaign atomically, in order, each as
-- if it ran alone (window, then duplicate, then stock); record each admitted user AND append its
-- issuance to the campaign's stream, in one script — nothing is admitted without being queued.
-- Used by redis-lua-async and redis-lua-async-cached (src/redis/admissions.ts gathers the
-- attempts of one event-loop turn into one call); the worker persists.
--
-- KEYS[1]  {cpn:N}:state   hash: total, starts, ends (ms since epoch, half-open window), issued, expireat
-- KEYS[2]  {cpn:N}:users   set of admitted user ids (issued rows + queued + dead-lettered)
-- KEYS[3]  {cpn:N}:stream  issuance stream read by the worker's consumer group
-- ARGV[1]  coupon id (copied into each entry so the worker can validate it)
-- then four per attempt, in arrival order:
-- ARGV[2+4i]  user id
-- ARGV[3+4i]  now, ms since epoch (the admission instant chosen by the API; becomes issued_at)
-- ARGV[4+4i]  request id, '' when none
-- ARGV[5+4i]  the W3C traceparent of a traced admission, '' when none
--
-- Returns an array with one code per attempt, in the same order:
--    1  ADMITTED         user added, issued incremented, entry {c, u, t, r} appended to the stream
--                        (and p, the traceparent, when there is one)
--    0  MISSING          no state for this campaign (every code is 0): rebuild it, then retry
--   -1  ALREADY_ISSUED   the user is in the set (also when admitted earlier in this batch)
--   -2  SOLD_OUT         issued >= total
--   -3  WINDOW_NOT_OPEN  now < starts
--   -4  WINDOW_CLOSED    now >= ends
--- @include "includes/admit-batch.lua"
return admit_batch(KEYS[1], KEYS[2], (#ARGV - 1) / 4, function(i) return ARGV[4 * i - 2], ARGV[4 * i - 1] end, function(i, user, at)
  -- Never MAXLEN here: only the worker trims, below what every group has acknowledged.
  local traceparent = ARGV[4 * i + 1]
  if traceparent == '' then
    redis.call('XADD', KEYS[3], '*', 'c', ARGV[1], 'u', user, 't', at, 'r', ARGV[4 * i])
  else
    redis.call('XADD', KEYS[3], '*', 'c', ARGV[1], 'u', user, 't', at, 'r', ARGV[4 * i], 'p', traceparent)
  end
end)
