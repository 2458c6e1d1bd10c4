-- The current join rule of each room (kept by the room pipeline), for the user directory and
-- the admin room list.
ALTER TABLE rooms ADD COLUMN join_rule TEXT;
UPDATE rooms SET join_rule = (
    SELECT json_extract(e.json, '$.content.join_rule') FROM current_state cs
    JOIN events e ON e.event_id = cs.event_id
    WHERE cs.room_id = rooms.room_id AND cs.event_type = 'm.room.join_rules' AND cs.state_key = ''
);
