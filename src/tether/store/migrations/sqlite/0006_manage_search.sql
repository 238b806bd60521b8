-- Issue 16: a conversation's metadata; idempotency records tied to the conversation they answered
-- (so deleting a conversation deletes them); indexes for deletes and fork listings; and the search
-- index. Search rows have rowid = conversation_pk << 32 | slot, where slot is a message's seq, or
-- 2^31 + epoch for a checkpoint's summary (store/indexing.py): a conversation's rows are one rowid
-- range, copied by a fork and removed by a delete without a scan. Every indexed text goes into
-- search_words (words, diacritics folded); text holding CJK characters also into search_cjk
-- (trigrams: Chinese and Japanese have no spaces between words). Each row also holds its
-- tenant's token ('t' + the tenant id's UTF-8 bytes in hex: store/indexing.py), ANDed into every
-- query, so a search reads only its tenant's rows inside the index instead of joining each match.
ALTER TABLE conversations ADD COLUMN metadata TEXT;
ALTER TABLE idempotency_keys ADD COLUMN conversation_pk INTEGER;
CREATE INDEX idempotency_keys_conversation ON idempotency_keys(conversation_pk)
    WHERE conversation_pk IS NOT NULL;
CREATE INDEX conversations_forks ON conversations(forked_from_pk) WHERE forked_from_pk IS NOT NULL;
CREATE INDEX conversation_aliases_conversation ON conversation_aliases(conversation_pk);
CREATE VIRTUAL TABLE search_words USING fts5(
    body, tenant, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE search_cjk USING fts5(body, tenant, tokenize = 'trigram');
-- what was stored before this migration: messages (text, or the text parts of a list of parts)
-- and summaries, as store/indexing.py indexes them from now on
INSERT INTO search_words (rowid, body, tenant)
    SELECT slot, body, (SELECT 't' || hex(tenant_id) FROM conversations WHERE pk = owner) FROM (
        SELECT (conversation_pk << 32) | seq AS slot, conversation_pk AS owner,
            CASE json_type(content)
                WHEN 'text' THEN json_extract(content, '$')
                WHEN 'array' THEN (SELECT group_concat(json_extract(p.value, '$.text'), ' ')
                    FROM json_each(content) p WHERE json_extract(p.value, '$.type') = 'text')
            END AS body
        FROM messages WHERE role IN ('user', 'assistant', 'tool')
    ) WHERE body IS NOT NULL AND body <> '';
INSERT INTO search_words (rowid, body, tenant)
    SELECT (conversation_pk << 32) | (2147483648 + epoch), summary,
        (SELECT 't' || hex(tenant_id) FROM conversations WHERE pk = conversation_pk)
    FROM checkpoints WHERE summary IS NOT NULL AND summary <> '';
INSERT INTO search_cjk (rowid, body, tenant)
    SELECT rowid, body, tenant FROM search_words
    WHERE body GLOB '*[぀-ヿ㐀-䶿一-鿿가-힯豈-﫿]*'
