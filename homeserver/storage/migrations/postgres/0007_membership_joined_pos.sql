-- Where the user's current stay in the room began (the event that made them join; 0 when not
-- joined). Unread counts start there when the user has no read receipt, so neither their own
-- invite nor a later profile change counts or resets them.
ALTER TABLE memberships ADD COLUMN joined_pos BIGINT NOT NULL DEFAULT 0;
UPDATE memberships SET joined_pos = stream_pos WHERE membership = 'join';
