-- Jump to date (/timestamp_to_event) looks events up by room and timestamp.
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);
