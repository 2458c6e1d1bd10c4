//! Client transaction ids (idempotent `PUT …/{txnId}` requests).

use crate::{Db, Result};

impl Db {
    /// The event a `(user, device, scope, txn_id)` already produced, if any.
    pub async fn txn_event(
        &self,
        user_id: &str,
        device_id: &str,
        scope: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(scope)
        .bind(txn_id)
        .fetch_optional(self.reader())
        .await?)
    }
}
