//! Full-text search over message bodies, room names and topics: SQLite FTS5 and PostgreSQL's
//! GIN-indexed `tsvector`, the one place where the two engines need different SQL.
//!
//! The indexed text arrives pre-tokenised (see `homeserver_core::text`): words lower-cased, and
//! Chinese/Japanese/Korean runs split into single characters and bigrams, so both engines find
//! "你好" inside "你好世界" with their plain word tokenisers.

use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::{
    Db, Engine, Result,
    persist::{SearchRow, chunk_rows, insert_rows, values},
    placeholders,
    visibility::VisibleSet,
};

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    /// Best match first.
    Rank,
    /// Newest first.
    Recent,
}

/// Hits are ranked within windows of this many of the newest hits (see `search_events`).
pub const RANK_WINDOW: i64 = 1000;

/// What to search: events in `rooms` whose `keys` text matches every token, among those the
/// searcher may see (`visible`: hits outside it are neither returned nor counted).
#[derive(Debug, Clone, Copy)]
pub struct SearchQuery<'a> {
    pub rooms: &'a [String],
    pub keys: &'a [String],
    pub tokens: &'a [String],
    pub order: SearchOrder,
    pub visible: &'a VisibleSet,
}

/// One hit: the event's stream position and its score (higher is better).
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub stream_pos: i64,
    pub rank: f64,
}

/// Indexes a batch's searchable events: a few multi-row statements, however many events.
pub(crate) async fn index(
    tx: &mut Transaction<'_, Any>,
    engine: Engine,
    room_id: &str,
    rows: &[SearchRow],
) -> Result<()> {
    match engine {
        Engine::Sqlite => {
            insert_rows(tx, "event_search (rowid, text)", "", 2, rows, |q, r| {
                q.bind(r.stream_pos).bind(r.text.as_str())
            })
            .await?;
            insert_rows(tx, "event_search_meta (stream_pos, room_id, search_key)", "", 3, rows, |q, r| {
                q.bind(r.stream_pos).bind(room_id).bind(r.key.as_str())
            })
            .await?;
        }
        Engine::Postgres => {
            // The tsvector is computed in the statement, from a VALUES list of the rows.
            for chunk in rows.chunks(chunk_rows(4)) {
                let sql = format!(
                    "INSERT INTO event_search_meta (stream_pos, room_id, search_key, tsv) \
                     SELECT CAST(v.p AS BIGINT), v.r, v.k, to_tsvector('simple', v.t) FROM (VALUES {}) AS v(p, r, k, t)",
                    values(4, chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q.bind(r.stream_pos).bind(room_id).bind(r.key.as_str()).bind(r.text.as_str());
                }
                q.execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

/// Removes a (redacted) event from the index.
pub(crate) async fn unindex(tx: &mut Transaction<'_, Any>, engine: Engine, event_id: &str) -> Result<()> {
    let pos: Option<i64> = sqlx::query_scalar("SELECT stream_pos FROM events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(pos) = pos else { return Ok(()) };
    if engine == Engine::Sqlite {
        sqlx::query("DELETE FROM event_search WHERE rowid = $1").bind(pos).execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM event_search_meta WHERE stream_pos = $1").bind(pos).execute(&mut **tx).await?;
    Ok(())
}

/// An FTS5 query matching every token (each quoted, so no token is read as an operator).
fn fts5_query(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

impl Db {
    /// Events of the query, newest first or ranked (best first within each window of
    /// [`RANK_WINDOW`] hits, windows newest first), skipping `offset` hits. Returns the page —
    /// possibly shorter than `limit` where a rank window ends — and, if `count` is asked for,
    /// the total number of hits.
    pub async fn search_events(
        &self,
        query: &SearchQuery<'_>,
        limit: i64,
        offset: i64,
        count: bool,
    ) -> Result<(Vec<SearchHit>, Option<i64>)> {
        let SearchQuery { rooms, keys, tokens, order, visible } = *query;
        if rooms.is_empty() || keys.is_empty() || tokens.is_empty() {
            return Ok((Vec::new(), count.then_some(0)));
        }
        // $1 = query, $2.. = rooms, then keys, then limit and offset.
        let room_list = placeholders(2, rooms.len());
        let key_list = placeholders(2 + rooms.len(), keys.len());
        let visible_at = 2 + rooms.len() + keys.len();
        let limit_at = visible_at + visible.placeholders();
        let (matches, score, from, newest_first) = match self.engine() {
            Engine::Sqlite => (
                "event_search MATCH $1",
                "(0.0 - bm25(event_search))",
                // CROSS JOIN keeps the full-text match the outer loop: the other order would
                // run the MATCH once per indexed event of the rooms. Ordering by the FTS rowid
                // (the stream position) lets FTS5 walk its hits newest first and stop at the
                // limit, scoring only what it returns.
                "event_search CROSS JOIN event_search_meta m ON m.stream_pos = event_search.rowid",
                "event_search.rowid DESC",
            ),
            Engine::Postgres => (
                "m.tsv @@ plainto_tsquery('simple', $1)",
                "CAST(ts_rank(m.tsv, plainto_tsquery('simple', $1)) AS DOUBLE PRECISION)",
                "event_search_meta m",
                "m.stream_pos DESC",
            ),
        };
        let query_text = match self.engine() {
            Engine::Sqlite => fts5_query(tokens),
            Engine::Postgres => tokens.join(" "),
        };
        // In SQLite the unary `+` keeps the room and key tests off the indexes: probing the room
        // index once per hit and listed room costs far more than one primary-key lookup per hit.
        let plus = if self.engine() == Engine::Sqlite { "+" } else { "" };
        let filter = format!(
            "{matches} AND {plus}m.room_id IN ({room_list}) AND {plus}m.search_key IN ({key_list}) AND {}",
            visible.condition("m.room_id", "m.stream_pos", visible_at)
        );
        let newest = format!(
            "SELECT m.stream_pos AS stream_pos, {score} AS score FROM {from} WHERE {filter} ORDER BY {newest_first}"
        );
        let (sql, limit, offset) = match order {
            SearchOrder::Recent => {
                (format!("{newest} LIMIT ${limit_at} OFFSET ${}", limit_at + 1), limit, offset)
            }
            // Scoring every hit of a common word is what makes ranked search slow elsewhere:
            // hits are ranked within windows of the newest RANK_WINDOW, window after window, so
            // a page costs at most one window's scores. A page never spans two windows.
            SearchOrder::Rank => {
                let window = offset / RANK_WINDOW;
                let within = offset % RANK_WINDOW;
                (
                    format!(
                        "SELECT stream_pos, score FROM ({newest} LIMIT {RANK_WINDOW} OFFSET {}) w \
                         ORDER BY score DESC, stream_pos DESC LIMIT ${limit_at} OFFSET ${}",
                        window * RANK_WINDOW,
                        limit_at + 1
                    ),
                    limit.min(RANK_WINDOW - within),
                    within,
                )
            }
        };
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(query_text.as_str());
        for room in rooms {
            q = q.bind(room);
        }
        for key in keys {
            q = q.bind(key);
        }
        let rows = visible.bind(q).bind(limit).bind(offset).fetch_all(self.reader()).await?;
        let hits = rows
            .iter()
            .map(|r| Ok(SearchHit { stream_pos: r.try_get("stream_pos")?, rank: r.try_get("score")? }))
            .collect::<Result<Vec<_>>>()?;
        if !count {
            return Ok((hits, None));
        }
        let count_sql = format!("SELECT COUNT(*) AS n FROM {from} WHERE {filter}");
        let mut q = sqlx::query(AssertSqlSafe(count_sql)).bind(query_text.as_str());
        for room in rooms {
            q = q.bind(room);
        }
        for key in keys {
            q = q.bind(key);
        }
        let total: i64 = visible.bind(q).fetch_one(self.reader()).await?.try_get("n")?;
        Ok((hits, Some(total)))
    }

    /// Events by stream position (for search results), unknown positions skipped.
    pub async fn events_at(&self, positions: &[i64]) -> Result<Vec<crate::events::EventRow>> {
        let mut out = Vec::new();
        for chunk in positions.chunks(500) {
            let sql = format!(
                "SELECT {} FROM events WHERE stream_pos IN ({}) AND {}",
                crate::events::EVENT_COLUMNS,
                placeholders(1, chunk.len()),
                crate::events::IN_TIMELINE
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for pos in chunk {
                q = q.bind(*pos);
            }
            for row in q.fetch_all(self.reader()).await? {
                out.push(crate::events::event_from_row(&row)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::fts5_query;

    #[test]
    fn fts5_tokens_are_quoted() {
        assert_eq!(fts5_query(&["hello".into(), "wo\"rld".into()]), "\"hello\" \"wo\"\"rld\"");
    }
}
