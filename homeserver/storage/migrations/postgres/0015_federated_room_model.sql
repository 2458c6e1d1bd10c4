-- The federated room model.
--
-- Events from other servers may be outliers (known only as the auth or state of other events:
-- no place in the room's timeline until they are de-outliered), rejected (kept with the
-- reason, never part of any state) or soft-failed (kept in the DAG, never shown to clients
-- and never a forward extremity). Events outside the live stream (backfilled history,
-- outliers, soft-failed and rejected events) take negative positions: unique like every
-- position, below every sync token, so no sync ever reports them as new.
ALTER TABLE events ADD COLUMN outlier INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN soft_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN rejected_reason TEXT;

-- Topological order (depth, then position): /messages, /context and their tokens.
CREATE INDEX events_by_room_topo ON events (room_id, depth, stream_pos);

-- The events that point at an event, as a prev event and as an auth event.
CREATE INDEX event_edges_by_prev ON event_edges (prev_event_id);
CREATE INDEX event_auth_by_auth ON event_auth (auth_event_id);

-- Backward extremities: prev events the room's events name that we do not hold yet; backfill
-- continues from them.
CREATE TABLE room_backward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- A resolved state (the result of state resolution over several forks) has several parents;
-- its entries are stored as a delta against the first (`state_groups.prev_group`).
CREATE TABLE state_group_parents (
    group_id BIGINT NOT NULL,
    parent_group BIGINT NOT NULL,
    PRIMARY KEY (group_id, parent_group)
);

-- The room's current state group: the resolved state at its forward extremities.
ALTER TABLE rooms ADD COLUMN current_state_group BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET current_state_group = COALESCE((
    SELECT e.state_after FROM events e WHERE e.room_id = rooms.room_id
    ORDER BY e.stream_pos DESC LIMIT 1), 0);

-- A state group entry may remove a key (event_id NULL): resolution can drop state a fork had.
ALTER TABLE state_group_entries ALTER COLUMN event_id DROP NOT NULL;
