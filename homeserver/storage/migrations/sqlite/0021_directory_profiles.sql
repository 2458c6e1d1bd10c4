-- The user directory: each room's current history visibility (kept by the room pipeline, as
-- the join rule is), since members of world-readable rooms are listed like those of public
-- ones; and each member's display name and avatar from their membership event, by which users
-- of other servers are found. Redacted member events give none.
ALTER TABLE rooms ADD COLUMN history_visibility TEXT;
UPDATE rooms SET history_visibility = (
    SELECT json_extract(e.json, '$.content.history_visibility') FROM current_state cs
    JOIN events e ON e.event_id = cs.event_id
    WHERE cs.room_id = rooms.room_id AND cs.event_type = 'm.room.history_visibility' AND cs.state_key = ''
);
ALTER TABLE memberships ADD COLUMN displayname TEXT;
ALTER TABLE memberships ADD COLUMN avatar_url TEXT;
UPDATE memberships SET
    displayname = (SELECT json_extract(e.json, '$.content.displayname') FROM events e
        WHERE e.event_id = memberships.event_id AND e.redacted_by IS NULL),
    avatar_url = (SELECT json_extract(e.json, '$.content.avatar_url') FROM events e
        WHERE e.event_id = memberships.event_id AND e.redacted_by IS NULL);
