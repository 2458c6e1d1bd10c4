-- Receipts: the latest receipt of each type (and thread) per user and room.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_pos BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_by_stream ON receipts (room_id, stream_pos);

-- Push actions: who an event notifies (computed by the room pipeline, written with the event).
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    highlight INTEGER NOT NULL,
    thread_id TEXT,
    actions TEXT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
CREATE INDEX event_push_actions_by_room ON event_push_actions (user_id, room_id, stream_pos);

-- Relations (m.relates_to): edits, reactions, threads, references.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    relates_to TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    aggregation_key TEXT,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX event_relations_by_target ON event_relations (relates_to, rel_type, stream_pos);
CREATE INDEX event_relations_threads ON event_relations (room_id, rel_type, relates_to);

-- Threads: one row per thread root, with its latest event, for /threads.
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    root_id TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, root_id)
);
CREATE INDEX threads_by_latest ON threads (room_id, latest_pos);

-- Content reports.
CREATE TABLE reports (
    report_id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    reporter TEXT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user TEXT,
    reason TEXT,
    score BIGINT,
    created_ts BIGINT NOT NULL
);

-- Rooms blocked by an admin: nobody may join them again.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY NOT NULL,
    blocked_by TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- Full-text search: searchable text of events, pre-tokenised by Lattice (CJK as bigrams).
CREATE VIRTUAL TABLE event_search USING fts5(text, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2');
CREATE TABLE event_search_meta (
    stream_pos BIGINT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    search_key TEXT NOT NULL
);
CREATE INDEX event_search_meta_by_room ON event_search_meta (room_id, stream_pos);
