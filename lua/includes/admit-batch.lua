-- admit-batch (included): the one decision every admission script makes — window, then duplicate,
-- then stock — over a batch of attempts on one campaign, in order, each as if it ran alone; an
-- admitted user joins the set and the state's issued count. The including script says how its
-- attempts are laid out in ARGV and what else an admission writes (queue it, mark it).
--
-- admit_batch(stateKey, usersKey, n, attempt, on_admit, on_admitted)
--   stateKey     {cpn:N}:state  hash: total, starts, ends (ms since epoch, half-open window), issued,
--                expireat, primary (run id of the server the state was created or last settled on)
--   usersKey     {cpn:N}:users  set of admitted user ids
--   n            number of attempts
--   attempt(i)   → user id, now (ms since epoch, as a string: the admission instant chosen by the API)
--   on_admit(i, user, at)    the script's own writes for an admitted attempt
--   on_admitted(expireat)    the script's own writes once, when the batch admitted anyone (may be nil)
--
-- Returns an array with one code per attempt, in order:
--    1  ADMITTED         user added, issued incremented, on_admit ran
--    0  MISSING          no state for this campaign (every code is 0): rebuild it, then retry
--   -5  UNSETTLED        the state was created or settled on another server (every code is -5): this
--                        one is a promoted replica or a restart, and may lack admissions the other
--                        acknowledged; settle it against the database and the queue, then retry
--   -1  ALREADY_ISSUED   the user is in the set (also when admitted earlier in this batch)
--   -2  SOLD_OUT         issued >= total
--   -3  WINDOW_NOT_OPEN  now < starts
--   -4  WINDOW_CLOSED    now >= ends
--- @include "includes/run-id.lua"

local function admit_batch(stateKey, usersKey, n, attempt, on_admit, on_admitted)
  local codes = {}
  local state = redis.call('HMGET', stateKey, 'total', 'starts', 'ends', 'issued', 'expireat', 'primary')
  if not state[1] then
    for i = 1, n do codes[i] = 0 end
    return codes
  end
  if state[6] ~= server_run_id() then
    for i = 1, n do codes[i] = -5 end
    return codes
  end
  local total, starts, ends = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
  local before = tonumber(state[4])
  local issued = before
  for i = 1, n do
    local user, at = attempt(i)
    local now = tonumber(at)
    if now < starts then
      codes[i] = -3
    elseif now >= ends then
      codes[i] = -4
    elseif redis.call('SISMEMBER', usersKey, user) == 1 then
      codes[i] = -1
    elseif issued >= total then
      codes[i] = -2
    else
      redis.call('SADD', usersKey, user)
      issued = issued + 1
      on_admit(i, user, at)
      codes[i] = 1
    end
  end
  if issued > before then
    -- The first member creates the set: give it the campaign's retention like the state hash.
    if before == 0 then redis.call('PEXPIREAT', usersKey, state[5]) end
    if on_admitted then on_admitted(state[5]) end
    redis.call('HINCRBY', stateKey, 'issued', issued - before)
  end
  return codes
end
