-- Tether schema v1. Messages are append-only; seq is gapless per conversation.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    created_at  REAL NOT NULL
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);

CREATE TABLE conversations (
    pk              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    id              TEXT NOT NULL,
    title           TEXT,
    model           TEXT,
    system_prompt   TEXT,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    turn_count      INTEGER NOT NULL DEFAULT 0,
    epoch           INTEGER NOT NULL DEFAULT 0,
    usage_prompt_tokens INTEGER,  -- the upstream's prompt_tokens on the last turn
    usage_through_seq   INTEGER,  -- last seq that prompt held
    usage_epoch         INTEGER,  -- the epoch that prompt was built on
    forked_from_pk  INTEGER REFERENCES conversations(pk),
    forked_from_seq INTEGER,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX conversations_tenant_updated ON conversations(tenant_id, updated_at);

CREATE TABLE conversation_aliases (
    tenant_id       TEXT NOT NULL,
    alias           TEXT NOT NULL,
    conversation_pk INTEGER NOT NULL REFERENCES conversations(pk),
    created_at      REAL NOT NULL,
    PRIMARY KEY (tenant_id, alias)
);

CREATE TABLE turns (
    id                TEXT PRIMARY KEY,
    conversation_pk   INTEGER NOT NULL REFERENCES conversations(pk),
    status            TEXT NOT NULL,
    model             TEXT,
    stream            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    usage             TEXT,
    error             TEXT,
    first_seq         INTEGER,
    last_seq          INTEGER,
    compacted         INTEGER NOT NULL DEFAULT 0,
    notes             TEXT,
    started_at        REAL NOT NULL,
    first_token_at    REAL,
    finished_at       REAL
);
CREATE INDEX turns_conversation ON turns(conversation_pk, started_at);

CREATE TABLE messages (
    conversation_pk INTEGER NOT NULL REFERENCES conversations(pk),
    seq             INTEGER NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT,
    tool_calls      TEXT,
    tool_call_id    TEXT,
    name            TEXT,
    extra           TEXT,
    tokens          INTEGER NOT NULL DEFAULT 0,
    turn_id         TEXT,
    created_at      REAL NOT NULL,
    PRIMARY KEY (conversation_pk, seq)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    conversation_pk    INTEGER NOT NULL REFERENCES conversations(pk),
    epoch              INTEGER NOT NULL,
    covers_through_seq INTEGER NOT NULL,  -- the summary stands in for seq <= this
    prune_through_seq  INTEGER NOT NULL,  -- large tool outputs with seq <= this are stubbed
    summary            TEXT,
    ledger             TEXT,
    tokens_before      INTEGER,
    tokens_after       INTEGER,
    model              TEXT,
    prompt_version     TEXT,
    stats              TEXT,
    turn_id            TEXT,
    created_at         REAL NOT NULL,
    PRIMARY KEY (conversation_pk, epoch)
);
