-- Idempotency keys: a retried POST with the same key replays the first result, never a second
-- turn. The stored response is written in the same transaction as the turn it answers.
CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    route         TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        TEXT NOT NULL,          -- running | completed
    stream        INTEGER NOT NULL DEFAULT 0,
    response      BLOB,                   -- JSON body, or the SSE payloads (orjson list)
    headers       TEXT,                   -- response headers to replay (JSON object)
    created_at    REAL NOT NULL,
    completed_at  REAL,
    PRIMARY KEY (tenant_id, route, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
