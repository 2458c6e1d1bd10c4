//! Reading the event DAG's auth graph for the room model: the auth chain of a set of events
//! (state resolution's auth difference and conflicted subgraph), as `(event, auth event)`
//! edges, walked in one recursive query per chunk of starting events.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, placeholders};

impl Db {
    /// Every auth edge reachable from `events` by following `auth_events`: the events' auth
    /// chain is the set of edge targets.
    pub async fn auth_chain_edges(&self, events: &[String]) -> Result<Vec<(String, String)>> {
        let mut edges = HashSet::new();
        for chunk in events.chunks(500) {
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
        }
        Ok(edges.into_iter().collect())
    }

    /// The auth chain of `events`: every event reachable through `auth_events` (the events
    /// themselves only where another of them reaches them).
    pub async fn auth_chain(&self, events: &[String]) -> Result<HashSet<String>> {
        Ok(self.auth_chain_edges(events).await?.into_iter().map(|(_, auth)| auth).collect())
    }
}
