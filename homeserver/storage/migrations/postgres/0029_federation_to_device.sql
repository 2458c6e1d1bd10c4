-- To-device messages of this server's users for other servers' users: the m.direct_to_device
-- EDUs (each at most 64 KiB, `seq` numbering them) for one destination, at the stream position
-- of the sendToDevice request (written in the same transaction as the local recipients'
-- messages). The sender routes the position into
-- the destination's outbox; the row goes when the destination acknowledges it.
CREATE TABLE federation_to_device (
    destination TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    edu TEXT NOT NULL,
    PRIMARY KEY (destination, stream_pos, seq)
);
CREATE INDEX federation_to_device_by_pos ON federation_to_device (stream_pos);
