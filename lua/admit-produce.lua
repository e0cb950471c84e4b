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
local attempts = #ARGV / 2
local codes = {}
local state = redis.call('HMGET', KEYS[1], 'total', 'starts', 'ends', 'issued', 'expireat')
if not state[1] then
  for i = 1, attempts do codes[i] = 0 end
  return codes
end
local total, starts, ends = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
local before = tonumber(state[4])
local issued = before
for i = 1, attempts do
  local user, at = ARGV[2 * i - 1], ARGV[2 * i]
  local now = tonumber(at)
  if now < starts then
    codes[i] = -3
  elseif now >= ends then
    codes[i] = -4
  elseif redis.call('SISMEMBER', KEYS[2], user) == 1 then
    codes[i] = -1
  elseif issued >= total then
    codes[i] = -2
  else
    redis.call('SADD', KEYS[2], user)
    redis.call('ZADD', KEYS[3], at, user)
    issued = issued + 1
    codes[i] = 1
  end
end
if issued > before then
  -- The first members create the sets: give them the campaign's retention like the state hash.
  redis.call('PEXPIREAT', KEYS[3], state[5])
  if before == 0 then redis.call('PEXPIREAT', KEYS[2], state[5]) end
  redis.call('HINCRBY', KEYS[1], 'issued', issued - before)
end
return codes
