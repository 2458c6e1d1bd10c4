-- The room's current state group as of each stream position where it changed: sync computes
-- the state a client lacks as the difference between the current state at its token and at the
-- timeline's start, which also catches changes no state event in the range carries (a merge
-- of forks that brings an older state event back, or drops one).
CREATE TABLE room_state_history (
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    state_group BIGINT NOT NULL,
    PRIMARY KEY (room_id, stream_pos)
);
-- Until now rooms were linear: the current state changed with every state event.
INSERT INTO room_state_history (room_id, stream_pos, state_group)
    SELECT room_id, stream_pos, state_after FROM events
    WHERE state_key IS NOT NULL AND state_after <> state_before AND stream_pos > 0;
-- Rooms that already took remote events may have forked: their current state is the stored
-- current group, as of their newest position.
INSERT INTO room_state_history (room_id, stream_pos, state_group)
    SELECT r.room_id, MAX(e.stream_pos), r.current_state_group FROM rooms r
    JOIN events e ON e.room_id = r.room_id AND e.stream_pos > 0
    WHERE r.current_state_group <> 0
    GROUP BY r.room_id, r.current_state_group
ON CONFLICT (room_id, stream_pos) DO UPDATE SET state_group = excluded.state_group;
