-- Index search entries as they arrive instead of queueing them in GIN's pending list, which
-- every search would scan linearly until the next vacuum: searches stay fast right after a burst
-- of messages, at a small cost per insert.
ALTER INDEX event_search_tsv SET (fastupdate = off);
