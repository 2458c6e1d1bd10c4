//! The pre-r0.4 form of password authentication in user-interactive auth, which Synapse still
//! accepts and SyTest and older clients send: `{"type": "m.login.password", "user": "…",
//! "password": "…"}` without an `identifier`. It is rewritten to the current form
//! (`identifier: {type: m.id.user, user}`) before the request is parsed, so every endpoint
//! with UIA takes it and the UIA code sees one form.

use axum::body::Bytes;
use serde_json::{Value, json};

/// The body with a legacy password `auth` rewritten; any other body unchanged.
pub(crate) fn rewrite(body: Bytes) -> Bytes {
    // Cheap test first: most bodies carry no password auth at all.
    let text = String::from_utf8_lossy(&body);
    if !text.contains("m.login.password") || !text.contains("\"auth\"") {
        return body;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else { return body };
    let Some(auth) = value.get_mut("auth").and_then(Value::as_object_mut) else { return body };
    if auth.get("type").and_then(Value::as_str) != Some("m.login.password") || auth.contains_key("identifier")
    {
        return body;
    }
    let Some(user) = auth.get("user").and_then(Value::as_str).map(str::to_owned) else { return body };
    auth.insert("identifier".into(), json!({ "type": "m.id.user", "user": user }));
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_user_becomes_an_identifier_and_nothing_else_changes() {
        let legacy =
            Bytes::from_static(br#"{"auth":{"type":"m.login.password","user":"@a:x","password":"p"},"k":1}"#);
        let rewritten: Value = serde_json::from_slice(&rewrite(legacy)).unwrap();
        assert_eq!(rewritten["auth"]["identifier"], json!({ "type": "m.id.user", "user": "@a:x" }));
        assert_eq!(rewritten["k"], 1);
        for body in [
            &br#"{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"a"},"user":"b"}}"#[..],
            br#"{"auth":{"type":"m.login.dummy","user":"a"}}"#,
            br#"{"user":"a","type":"m.login.password"}"#,
            br#"not json "auth" m.login.password"#,
        ] {
            assert_eq!(rewrite(Bytes::copy_from_slice(body)), Bytes::copy_from_slice(body));
        }
    }
}
