-- A redaction removes the redacted event's push actions by its stream position.
CREATE INDEX event_push_actions_by_pos ON event_push_actions (stream_pos);
