-- Running totals the writer keeps in the same transactions as the rows they count, so
-- start-up reads one row instead of counting the queue.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) SELECT 'queue_deliveries', COUNT(*) FROM queue;
