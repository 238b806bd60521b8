-- A conversation's transcript hash (engine/fingerprint.py): a full-history request is matched to
-- the conversation its history extends by one index probe. NULL for conversations written before
-- this migration until a full-history request reads them whole.
ALTER TABLE conversations ADD COLUMN history_hash BLOB;
ALTER TABLE conversations ADD COLUMN history_len INTEGER;
CREATE INDEX conversations_history ON conversations(tenant_id, history_hash)
    WHERE history_hash IS NOT NULL;
