-- Push actions that apply to every member of a room: one row per event instead of one per
-- member. The outcome for members whose rules give the common result is stored once here; the
-- members it does not fit (mentioned users, custom rules, the invitee) get their own row in
-- event_push_actions, which overrides this one (`notify = 0` there means "not for this user").
-- The sender is never notified of their own event.
CREATE TABLE event_push_broadcast (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_pos BIGINT PRIMARY KEY NOT NULL,
    sender TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    thread_id TEXT,
    actions TEXT NOT NULL
);
CREATE INDEX event_push_broadcast_by_room ON event_push_broadcast (room_id, stream_pos);
ALTER TABLE event_push_actions ADD COLUMN notify INTEGER NOT NULL DEFAULT 1;
