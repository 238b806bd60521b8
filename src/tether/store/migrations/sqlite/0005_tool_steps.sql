-- The tool journal: each server-side tool call of a turn, written as it completes (not with the
-- turn's commit), so a turn cut short shows which tools ran. Keyed by the turn; the
-- conversation's id is set when it existed at the call (a turn may create its conversation).
CREATE TABLE tool_steps (
    turn_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    conversation_id TEXT,
    round INTEGER NOT NULL,
    tool TEXT NOT NULL,
    source TEXT NOT NULL,
    arguments TEXT NOT NULL,
    status TEXT NOT NULL,
    output_chars INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (turn_id, call_id)
) WITHOUT ROWID;
