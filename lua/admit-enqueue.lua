-- admit-enqueue: decide one issue attempt atomically (window, then duplicate, then stock), record
-- the user AND append the issuance to the campaign's stream, in one script — nothing is admitted
-- without being queued. Used by redis-lua-async and redis-lua-async-cached; the worker persists.
--
-- KEYS[1]  {cpn:N}:state   hash: total, starts, ends (ms since epoch, half-open window), issued, expireat
-- KEYS[2]  {cpn:N}:users   set of admitted user ids (issued rows + queued + dead-lettered)
-- KEYS[3]  {cpn:N}:stream  issuance stream read by the worker's consumer group
-- ARGV[1]  user id
-- ARGV[2]  now, ms since epoch (the admission instant chosen by the API; becomes issued_at)
-- ARGV[3]  coupon id (copied into the entry so the worker can validate it)
-- ARGV[4]  request id, '' when none
--
-- Returns:
--    1  ADMITTED         user added, issued incremented, entry {c, u, t, r} appended to the stream
--    0  MISSING          no state for this campaign: rebuild it from the database, then retry
--   -1  ALREADY_ISSUED   the user is in the set
--   -2  SOLD_OUT         issued >= total
--   -3  WINDOW_NOT_OPEN  now < starts
--   -4  WINDOW_CLOSED    now >= ends
local state = redis.call('HMGET', KEYS[1], 'total', 'starts', 'ends', 'issued', 'expireat')
if not state[1] then return 0 end
local now = tonumber(ARGV[2])
if now < tonumber(state[2]) then return -3 end
if now >= tonumber(state[3]) then return -4 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local issued = tonumber(state[4])
if issued >= tonumber(state[1]) then return -2 end
redis.call('SADD', KEYS[2], ARGV[1])
-- The first member creates the set: give it the campaign's retention like the state hash.
if issued == 0 then redis.call('PEXPIREAT', KEYS[2], state[5]) end
redis.call('HINCRBY', KEYS[1], 'issued', 1)
-- Never MAXLEN here: only the worker trims, below what every group has acknowledged.
redis.call('XADD', KEYS[3], '*', 'c', ARGV[3], 'u', ARGV[1], 't', ARGV[2], 'r', ARGV[4])
return 1
