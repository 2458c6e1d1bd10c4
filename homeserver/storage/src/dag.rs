//! Reading the event DAG's auth graph for the room model: the auth chain of a set of events
//! (state resolution's auth difference and conflicted subgraph), as `(event, auth event)`
//! edges, walked in one recursive query per chunk of starting events.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, placeholders};

/// The largest auth graph a walk returns: far beyond any real room's, small enough to hold.
const MAX_AUTH_EDGES: usize = 2_000_000;

impl Db {
    /// Every auth edge reachable from `events` by following `auth_events`: the events' auth
    /// chain is the set of edge targets.
    pub async fn auth_chain_edges(&self, events: &[String]) -> Result<Vec<(String, String)>> {
        let mut edges = HashSet::new();
        for chunk in events.chunks(1_000) {
            let sql = format!(
                "WITH RECURSIVE walk(event_id, auth_event_id) AS ( \
                   SELECT event_id, auth_event_id FROM event_auth WHERE event_id IN ({}) \
                   UNION \
                   SELECT a.event_id, a.auth_event_id FROM event_auth a JOIN walk w ON a.event_id = w.auth_event_id \
                 ) SELECT event_id, auth_event_id FROM walk",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(self.reader()).await? {
                edges.insert((row.try_get("event_id")?, row.try_get("auth_event_id")?));
            }
            if edges.len() > MAX_AUTH_EDGES {
                return Err(crate::StorageError::Corrupt(format!(
                    "auth chain larger than {MAX_AUTH_EDGES} edges"
                )));
            }
        }
        Ok(edges.into_iter().collect())
    }

    /// The state events that list one of `events` as an auth event, as `(auth event, child)`
    /// (the auth DAG walked downwards, through `event_auth_by_auth`).
    pub async fn state_children(&self, events: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in events.chunks(1_000) {
            let sql = format!(
                "SELECT a.auth_event_id, a.event_id FROM event_auth a JOIN events e ON e.event_id = a.event_id \
                 WHERE a.auth_event_id IN ({}) AND e.state_key IS NOT NULL AND e.rejected = 0",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(self.reader()).await? {
                out.push((row.try_get("auth_event_id")?, row.try_get("event_id")?));
            }
        }
        Ok(out)
    }

    /// Which of `events` a live timeline event (not backfilled, rejected, soft-failed or an
    /// outlier) names as a prev event. Two indexed lookups rather than one join: joined, the
    /// PostgreSQL planner could start from `events` (its statistics taken while a join's
    /// outliers filled the table) and scan every live event for each call — 100 ms or more per
    /// received event, found by the federation benchmark.
    pub async fn referenced_in_timeline(&self, events: &[String]) -> Result<HashSet<String>> {
        let mut edges: Vec<(String, String)> = Vec::new();
        for chunk in events.chunks(500) {
            let sql = format!(
                "SELECT event_id, prev_event_id FROM event_edges WHERE prev_event_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            edges.extend(q.fetch_all(self.reader()).await?);
        }
        let referencing: Vec<String> = edges.iter().map(|(id, _)| id.clone()).collect();
        let mut live = HashSet::new();
        for chunk in referencing.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM events WHERE event_id IN ({}) AND stream_pos > 0 AND rejected = 0 \
                 AND soft_failed = 0 AND outlier = 0",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            live.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(edges.into_iter().filter(|(id, _)| live.contains(id)).map(|(_, prev)| prev).collect())
    }

    /// The auth chain of `events`: every event reachable through `auth_events` (the events
    /// themselves only where another of them reaches them).
    pub async fn auth_chain(&self, events: &[String]) -> Result<HashSet<String>> {
        Ok(self.auth_chain_edges(events).await?.into_iter().map(|(_, auth)| auth).collect())
    }
}
