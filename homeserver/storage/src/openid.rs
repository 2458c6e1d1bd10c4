//! OpenID tokens: short-lived proofs of a user's identity for third parties (integration
//! managers, widgets), issued to the user and exchanged at `/openid/userinfo`.

use crate::{Db, Result};

impl Db {
    /// Stores a new token for `user_id` valid until `expires_ts`; expired tokens go with it.
    pub async fn add_openid_token(
        &self,
        token: &str,
        user_id: &str,
        expires_ts: i64,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE expires_ts <= $1").bind(now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES ($1, $2, $3)")
            .bind(token)
            .bind(user_id)
            .bind(expires_ts)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user a token was issued to, if it has not expired at `now`.
    pub async fn openid_token_user(&self, token: &str, now: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM openid_tokens WHERE token = $1 AND expires_ts > $2")
            .bind(token)
            .bind(now)
            .fetch_optional(self.reader())
            .await?)
    }
}
