-- The stream horizon: the highest stream position that may have been handed out. The allocator
-- persists it before handing out positions beyond it, so a restart starts above every position
-- a client could hold, including positions whose data was never stored (a failed write, a
-- reservation that was dropped). One row.
CREATE TABLE stream_horizon (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    pos BIGINT NOT NULL
);
INSERT INTO stream_horizon (id, pos) VALUES (1, 0);
