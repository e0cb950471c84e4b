-- server_run_id() (included): this server's run id (INFO server), new at every start and different on
-- every server. A campaign state records the one it was created or settled on ("primary"): a state
-- that names another server's was copied here by replication (a failover) or reloaded by a restart,
-- and may lack what that server acknowledged last.
local function server_run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
