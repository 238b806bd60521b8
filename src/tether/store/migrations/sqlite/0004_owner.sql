-- The server (TETHER_INSTANCE_ID) that recorded a turn or took an idempotency claim: a start-up
-- sweep marks incomplete only the running turns, and drops only the running claims, of the server
-- starting. NULL for rows written before this migration (one server per SQLite file until then):
-- they count as the own of whichever server starts.
ALTER TABLE turns ADD COLUMN owner TEXT;
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT;
