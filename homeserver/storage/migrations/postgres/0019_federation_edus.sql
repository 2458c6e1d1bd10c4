-- Outbound federation of receipts and forwarded membership. Receipts are routed by stream
-- position across rooms, so they need an index by position alone. `federation_forward` marks
-- the events this server accepted as a room's resident for another server (`send_join`,
-- `send_leave`): the sender forwards those to the other servers in the room, though they are
-- not this server's users' events. A mark is written before the event is placed and removed
-- once it is routed.
CREATE INDEX receipts_by_position ON receipts (stream_pos);
CREATE TABLE federation_forward (
    event_id TEXT PRIMARY KEY NOT NULL
);
