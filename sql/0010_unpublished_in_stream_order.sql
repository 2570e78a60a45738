-- produce streams a window in (created_at, id) order, so one source account's transactions are published in
-- the order they were created. With created_at alone in transactions_unpublished, PostgreSQL sorted the
-- whole window before the cursor returned its first row: 0.12 s for 100,000 rows, spilled to disk, and a
-- window ten times that size was sorted on disk in full first. With id in the key, the index scan is the
-- order, and the window streams.
DROP INDEX transactions_unpublished;
CREATE INDEX transactions_unpublished ON transactions (created_at, id) WHERE published_at IS NULL;
