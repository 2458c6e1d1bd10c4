//! Event relations (edits, reactions, threads, references) and thread listings.

use sqlx::{AssertSqlSafe, Row};

use crate::{Db, Result, events::Bound, events::EventRow, placeholders, visibility::VisibleSet};

/// A thread's summary for the bundled `m.thread` aggregation of its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    pub root_id: String,
    pub count: i64,
    pub latest_pos: i64,
    /// Whether the viewer sent a reply in the thread.
    pub viewer_replied: bool,
}

/// What the server bundles into `unsigned.m.relations` for a set of events.
#[derive(Debug, Clone, Default)]
pub struct Aggregations {
    pub threads: Vec<ThreadSummary>,
    /// `(target, position of its latest valid edit)`: edits by the original sender of the same type.
    pub edits: Vec<(String, i64)>,
    /// `(target, referencing event id)`, oldest first.
    pub references: Vec<(String, String)>,
}

impl Db {
    /// The bundled aggregations for `targets` as seen by `viewer`: one query (three grouped
    /// parts), however many events and relations there are — it runs for every event list a
    /// client reads, so most of the time it finds nothing, once.
    ///
    /// Only relating events in `visible` count (the viewer's history visibility).
    pub async fn aggregations(
        &self,
        targets: &[String],
        viewer: &str,
        visible: &VisibleSet,
    ) -> Result<Aggregations> {
        let mut out = Aggregations::default();
        let mut references = Vec::new();
        for chunk in targets.chunks(500) {
            let list = placeholders(2, chunk.len());
            let seen =
                |room: &str, pos: &str| format!("AND {}", visible.condition(room, pos, 2 + chunk.len()));
            let (t, e, r) = (
                seen("room_id", "stream_pos"),
                seen("r.room_id", "r.stream_pos"),
                seen("room_id", "stream_pos"),
            );
            let sql = format!(
                "SELECT 't' AS kind, relates_to, COUNT(*) AS n, MAX(stream_pos) AS pos, \
                   SUM(CASE WHEN sender = $1 THEN 1 ELSE 0 END) AS mine, CAST(NULL AS TEXT) AS event_id \
                 FROM event_relations WHERE rel_type = 'm.thread' AND relates_to IN ({list}) {t} GROUP BY relates_to \
                 UNION ALL \
                 SELECT 'e', r.relates_to, COUNT(*), MAX(r.stream_pos), COUNT(*), CAST(NULL AS TEXT) \
                 FROM event_relations r JOIN events o ON o.event_id = r.relates_to \
                 WHERE r.rel_type = 'm.replace' AND r.sender = o.sender AND r.event_type = o.event_type \
                 AND o.state_key IS NULL AND r.relates_to IN ({list}) {e} GROUP BY r.relates_to \
                 UNION ALL \
                 SELECT 'r', relates_to, COUNT(*), MAX(stream_pos), COUNT(*), event_id FROM event_relations \
                 WHERE rel_type = 'm.reference' AND relates_to IN ({list}) {r} GROUP BY relates_to, event_id"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(viewer.to_owned());
            for t in chunk {
                q = q.bind(t.clone());
            }
            q = visible.bind(q);
            for r in q.fetch_all(self.reader()).await? {
                let kind: String = r.try_get("kind")?;
                let target: String = r.try_get("relates_to")?;
                let pos: i64 = r.try_get("pos")?;
                match kind.as_str() {
                    "t" => out.threads.push(ThreadSummary {
                        root_id: target,
                        count: r.try_get("n")?,
                        latest_pos: pos,
                        viewer_replied: r.try_get::<i64, _>("mine")? > 0,
                    }),
                    "e" => out.edits.push((target, pos)),
                    _ => references.push((pos, target, r.try_get::<String, _>("event_id")?)),
                }
            }
        }
        references.sort();
        out.references = references.into_iter().map(|(_, target, id)| (target, id)).collect();
        Ok(out)
    }

    /// Up to `limit` ids of events relating to any of `targets` (any relation type), oldest
    /// first, for recursive `/relations`.
    pub async fn relating_event_ids(&self, targets: &[String], limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in targets.chunks(500) {
            if out.len() >= limit {
                break;
            }
            let sql = format!(
                "SELECT event_id FROM event_relations WHERE relates_to IN ({}) ORDER BY stream_pos LIMIT ${}",
                placeholders(1, chunk.len()),
                chunk.len() + 1
            );
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql));
            for t in chunk {
                q = q.bind(t);
            }
            let ids: Vec<String> = q.bind((limit - out.len()) as i64).fetch_all(self.reader()).await?;
            out.extend(ids);
        }
        Ok(out)
    }

    /// Events relating to `targets` (optionally of one relation and event type), in the room's
    /// topological order (`forward`) or newest first, strictly after/before `from` (a stream
    /// bound keeps what arrived after/at or before it), up to `limit`.
    #[allow(clippy::too_many_arguments)]
    pub async fn related_events(
        &self,
        targets: &[String],
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<Bound>,
        forward: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let order = if forward { "ASC" } else { "DESC" };
        let (condition, params) = match &from {
            Some(bound @ Bound::Stream(_)) => {
                (crate::events::bound_condition(bound, "e.", if forward { ">" } else { "<=" }, 4), 1)
            }
            Some(bound) => {
                (crate::events::bound_condition(bound, "e.", if forward { ">" } else { "<" }, 4), 2)
            }
            None => ("1 = 1".to_owned(), 0),
        };
        let target_list = placeholders(4 + params, targets.len());
        let sql = format!(
            "SELECT {cols} FROM events e JOIN event_relations r ON r.event_id = e.event_id \
             WHERE r.relates_to IN ({target_list}) AND ($1 = '' OR r.rel_type = $1) AND ($2 = '' OR r.event_type = $2) \
             AND {condition} AND e.rejected = 0 AND e.soft_failed = 0 AND e.outlier = 0 \
             ORDER BY e.depth {order}, e.stream_pos {order} LIMIT $3",
            cols = crate::events::EVENT_COLUMNS
                .split(", ")
                .map(|c| format!("e.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(rel_type.unwrap_or(""))
            .bind(event_type.unwrap_or(""))
            .bind(limit);
        if let Some(bound) = &from {
            q = crate::events::bind_bound(q, bound);
        }
        for t in targets {
            q = q.bind(t);
        }
        q.fetch_all(self.reader()).await?.iter().map(crate::events::event_from_row).collect()
    }

    /// Whether `sender` already annotated `target` with `key` in an event of `event_type`.
    pub async fn has_annotation(
        &self,
        target: &str,
        sender: &str,
        event_type: &str,
        key: &str,
    ) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM event_relations WHERE relates_to = $1 AND rel_type = 'm.annotation' \
             AND sender = $2 AND aggregation_key = $3 AND event_type = $4",
        )
        .bind(target)
        .bind(sender)
        .bind(key)
        .bind(event_type)
        .fetch_one(self.reader())
        .await?;
        Ok(n > 0)
    }

    /// Thread roots of a room by latest activity, newest first, below position `before`;
    /// `participant` limits them to threads the user started or replied in. With a restricted
    /// `visible` set, activity is the latest reply the user may see, and threads without one
    /// are not listed (the list must not reveal replies posted where the user could not see).
    pub async fn threads(
        &self,
        room_id: &str,
        before: i64,
        limit: i64,
        participant: Option<&str>,
        visible: &VisibleSet,
    ) -> Result<Vec<(String, i64)>> {
        let participated = "($3 = '' OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.root_id AND e.sender = $3) \
             OR EXISTS (SELECT 1 FROM event_relations p WHERE p.relates_to = t.root_id \
                        AND p.rel_type = 'm.thread' AND p.sender = $3))";
        let sql = if visible.is_everything() {
            format!(
                "SELECT t.root_id, t.latest_pos FROM threads t WHERE t.room_id = $1 AND t.latest_pos < $2 \
                 AND {participated} ORDER BY t.latest_pos DESC LIMIT $4"
            )
        } else {
            format!(
                "SELECT t.root_id, t.latest_pos FROM (SELECT relates_to AS root_id, MAX(stream_pos) AS latest_pos \
                   FROM event_relations WHERE room_id = $1 AND rel_type = 'm.thread' AND {} \
                   GROUP BY relates_to) t \
                 WHERE t.latest_pos < $2 AND {participated} \
                 AND EXISTS (SELECT 1 FROM threads live WHERE live.room_id = $1 AND live.root_id = t.root_id) \
                 ORDER BY t.latest_pos DESC LIMIT $4",
                visible.condition("room_id", "stream_pos", 5)
            )
        };
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(room_id)
            .bind(before)
            .bind(participant.unwrap_or(""))
            .bind(limit);
        let rows = visible.bind(q).fetch_all(self.reader()).await?;
        rows.iter().map(|r| Ok((r.try_get("root_id")?, r.try_get("latest_pos")?))).collect()
    }
}
