//! `lattice media purge-remote --before 30d`: drops cached copies of other servers' media
//! fetched longer ago than that. The content files belong to the serving process (it alone
//! removes them, under its commit lock), so this asks it through the admin API
//! (`POST /_synapse/admin/v1/purge_media_cache`) with a server admin's access token, as
//! `lattice plugin` does.

use homeserver_core::time::now_millis;
use serde_json::Value;

use crate::{config::Config, plugin_cli::server_url};

/// A number of days, `30` or `30d`, as milliseconds before now.
fn cutoff(before: &str) -> Result<(u64, u64), String> {
    let days: u64 = before
        .trim()
        .trim_end_matches('d')
        .parse()
        .map_err(|_| format!("--before takes a number of days (30 or 30d), not {before:?}"))?;
    Ok((days, now_millis().saturating_sub(days.saturating_mul(24 * 3600 * 1000))))
}

/// Asks the running server to purge; what to print, or the error.
pub async fn purge_remote(config: &Config, token: &str, before: &str) -> Result<String, String> {
    let (days, before_ts) = cutoff(before)?;
    let url = format!("{}/_synapse/admin/v1/purge_media_cache?before_ts={before_ts}", server_url(config));
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = body["error"].as_str().unwrap_or("no details");
        return Err(format!("the server refused ({status}): {error}"));
    }
    let deleted = body["deleted"].as_u64().unwrap_or(0);
    Ok(format!("purged {deleted} cached remote media fetched more than {days} days ago"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_read_with_or_without_their_unit() {
        assert_eq!(cutoff("30d").unwrap().0, 30);
        assert_eq!(cutoff(" 7 ").unwrap().0, 7);
        assert!(cutoff("soon").is_err());
        assert!(cutoff("-1").is_err());
    }
}
