//! The pre-r0.4 form of password authentication in user-interactive auth, which Synapse still
//! accepts and SyTest and older clients send: `{"type": "m.login.password", "user": "…",
//! "password": "…"}` without an `identifier`. A body that fails to parse and holds one is
//! rewritten to the current form (`identifier: {type: m.id.user, user}`) and parsed again, so
//! every endpoint with UIA takes it, the UIA code sees one form, and no body that parses as
//! sent is ever touched.

use axum::body::Bytes;
use serde_json::{Value, json};

/// The body with a legacy password `auth` rewritten; `None` if it holds none.
pub(crate) fn rewrite(body: &Bytes) -> Option<Bytes> {
    let mut value = serde_json::from_slice::<Value>(body).ok()?;
    let auth = value.get_mut("auth")?.as_object_mut()?;
    if auth.get("type")?.as_str()? != "m.login.password" || auth.contains_key("identifier") {
        return None;
    }
    let user = auth.get("user")?.as_str()?.to_owned();
    auth.insert("identifier".into(), json!({ "type": "m.id.user", "user": user }));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_user_becomes_an_identifier_and_nothing_else_is_rewritten() {
        let legacy =
            Bytes::from_static(br#"{"auth":{"type":"m.login.password","user":"@a:x","password":"p"},"k":1}"#);
        let rewritten: Value = serde_json::from_slice(&rewrite(&legacy).unwrap()).unwrap();
        assert_eq!(rewritten["auth"]["identifier"], json!({ "type": "m.id.user", "user": "@a:x" }));
        assert_eq!(rewritten["k"], 1);
        for body in [
            &br#"{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":"a"},"user":"b"}}"#[..],
            br#"{"auth":{"type":"m.login.dummy","user":"a"}}"#,
            br#"{"user":"a","type":"m.login.password"}"#,
            br#"not json "auth" m.login.password"#,
        ] {
            assert_eq!(rewrite(&Bytes::copy_from_slice(body)), None);
        }
    }
}
