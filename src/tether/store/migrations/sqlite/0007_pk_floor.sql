-- A deleted conversation's pk is never given to another: SQLite gives a new row max(pk) + 1,
-- which after deleting the newest conversation is the deleted one's pk, and a request that
-- resolved the deleted conversation could then write into the new one (another tenant's,
-- perhaps). New conversations take max(max(pk), this floor) + 1; a delete raises the floor.
CREATE TABLE conversation_pk_floor (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    floor INTEGER NOT NULL
);
INSERT INTO conversation_pk_floor (id, floor) SELECT 1, coalesce(max(pk), 0) FROM conversations
