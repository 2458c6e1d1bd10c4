-- Outbound federation. `federation_outbox` holds, per destination server, the positions of this
-- server's events it is owed, written when the event is routed (to the servers in the room at
-- that event, and the server a membership event is about), deleted when a transaction carrying
-- them is acknowledged. `federation_destinations` keeps each destination's backoff;
-- `federation_routed` how far the event stream has been routed.
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    retry_at BIGINT NOT NULL DEFAULT 0,
    last_success_ts BIGINT
);
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (destination, stream_pos)
);
CREATE TABLE federation_routed (
    id INTEGER PRIMARY KEY NOT NULL,
    stream_pos BIGINT NOT NULL
);
