-- The search index a little behind the turns, in batches: a turn's commit records which
-- messages it added here (one small row) instead of writing the FTS5 rows itself, which cost a
-- fifth of a turn's CPU (each transaction wrote a new FTS5 segment: bench/README.md, issue 16).
-- store/sqlite_backlog.py indexes the rows in batches, every half second and before every
-- search (so a search never misses a committed message), a fork or a delete.
CREATE TABLE search_backlog (
    conversation_pk INTEGER NOT NULL,
    first_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL
);
CREATE INDEX search_backlog_conversation ON search_backlog(conversation_pk)
