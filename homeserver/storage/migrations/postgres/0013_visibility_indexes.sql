-- History visibility reads a user's own membership events and a room's visibility changes by
-- room and type, in position order; jump to date filters candidates by position without
-- reading the event rows.
CREATE INDEX events_by_room_state ON events (room_id, event_type, state_key, stream_pos);
DROP INDEX events_by_room_ts;
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts, stream_pos);
