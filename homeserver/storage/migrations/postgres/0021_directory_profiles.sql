-- The user directory: each room's current history visibility (kept by the room pipeline, as
-- the join rule is), since members of world-readable rooms are listed like those of public
-- ones; and each member's display name and avatar from their membership event, by which users
-- of other servers are found. Redacted member events give none; events whose JSON escapes
-- U+0000 (which jsonb and text refuse) are skipped.
ALTER TABLE rooms ADD COLUMN history_visibility TEXT;
UPDATE rooms SET history_visibility = (
    SELECT (e.json::jsonb) -> 'content' ->> 'history_visibility' FROM current_state cs
    JOIN events e ON e.event_id = cs.event_id
    WHERE cs.room_id = rooms.room_id AND cs.event_type = 'm.room.history_visibility' AND cs.state_key = ''
      AND strpos(e.json, '\u0000') = 0
);
ALTER TABLE memberships ADD COLUMN displayname TEXT;
ALTER TABLE memberships ADD COLUMN avatar_url TEXT;
UPDATE memberships SET
    displayname = (SELECT (e.json::jsonb) -> 'content' ->> 'displayname' FROM events e
        WHERE e.event_id = memberships.event_id AND e.redacted_by IS NULL AND strpos(e.json, '\u0000') = 0),
    avatar_url = (SELECT (e.json::jsonb) -> 'content' ->> 'avatar_url' FROM events e
        WHERE e.event_id = memberships.event_id AND e.redacted_by IS NULL AND strpos(e.json, '\u0000') = 0);
