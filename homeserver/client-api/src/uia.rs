//! User-interactive authentication (UIA): the 401 dance of registration, password changes,
//! deactivation and device deletion.
//!
//! A session records the stages a client completed and the endpoint it was started for (so a
//! session cannot be replayed against a different operation). Stages supported: `m.login.dummy`,
//! `m.login.registration_token`, `m.login.password`.

use homeserver_core::{Error, ErrorKind, ids::random_string, time::now_millis};
use ruma::UserId;
use serde_json::{Value, json};

use crate::App;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// Sessions older than this are forgotten.
const SESSION_LIFETIME_MS: u64 = 30 * 60 * 1000;

fn challenge(flows: &[&[&str]], session: &str, completed: &[String], error: Option<&str>) -> Error {
    let body = json!({
        "flows": flows.iter().map(|stages| json!({ "stages": stages })).collect::<Vec<_>>(),
        "params": {},
        "session": session,
        "completed": completed,
    });
    Error::new(ErrorKind::UserInteractive(Box::new(body)), error.unwrap_or_default())
}

/// What a completed UIA step tells the caller.
pub struct Completed {
    /// The session the flow was completed in (kept only when the caller asked to keep it).
    pub session: String,
}

/// The request body without its `auth` part: what a session remembers of the first request.
/// A guest's access token (upgrading a guest) is not kept: tokens are never stored in clear.
fn client_dict(body: &Value) -> Option<String> {
    let mut dict = body.as_object()?.clone();
    dict.remove("auth");
    dict.remove("guest_access_token");
    Some(Value::Object(dict).to_string())
}

/// The parts of a request a UIA step reads.
pub struct Step<'a> {
    /// The request body (with its `auth` part).
    pub body: &'a [u8],
    /// `METHOD /path`: the operation a session is bound to.
    pub fingerprint: &'a str,
    /// The client's address, for the password-guessing limits.
    pub client_ip: Option<std::net::IpAddr>,
}

impl<'a> Step<'a> {
    pub fn of<T>(req: &'a homeserver_http::Ruma<T>) -> Self
    where
        T: ruma::api::IncomingRequest,
        T::Authentication: homeserver_http::extract::AuthKind,
    {
        Step { body: &req.raw_body, fingerprint: &req.fingerprint, client_ip: req.client_ip }
    }
}

/// Runs one UIA step for a request. `Ok` means a flow is complete and the operation may
/// proceed; otherwise the error is the 401 challenge (or a failure) to return.
///
/// `user` is the account the operation acts on (`None` for registration); `fingerprint` names the
/// operation (method and path). With `keep`, a completed session is kept (until it expires) so the
/// caller can store its result for retries; otherwise it is deleted.
pub async fn authenticate(
    app: &App,
    step: Step<'_>,
    flows: &[&[&str]],
    user: Option<&UserId>,
    keep: bool,
) -> Result<Completed, Error> {
    let fingerprint = step.fingerprint;
    let body: Value = serde_json::from_slice(step.body).unwrap_or(Value::Null);
    let now = now_millis();
    let _ = app.db.expire_uia_sessions(now.saturating_sub(SESSION_LIFETIME_MS) as i64).await;
    let Some(auth) = body.get("auth").filter(|a| a.is_object()) else {
        let session = random_string(24);
        app.db
            .create_uia_session(
                &session,
                user.map(|u| u.as_str()),
                fingerprint,
                client_dict(&body).as_deref(),
                now as i64,
            )
            .await
            .map_err(Error::from)?;
        return Err(challenge(flows, &session, &[], None));
    };
    let session_id = auth.get("session").and_then(Value::as_str).map(str::to_owned);
    let (session_id, mut completed) = match &session_id {
        Some(id) => match app.db.uia_session(id).await.map_err(Error::from)? {
            Some(session) => {
                if session.request_fingerprint != fingerprint
                    || session.user_id.as_deref() != user.map(|u| u.as_str())
                {
                    return Err(Error::forbidden(
                        "Requested operation has changed during the UI authentication session",
                    ));
                }
                (id.clone(), session.completed)
            }
            None => return Err(Error::new(ErrorKind::Unknown, "Unknown UIA session")),
        },
        None => {
            let id = random_string(24);
            app.db
                .create_uia_session(
                    &id,
                    user.map(|u| u.as_str()),
                    fingerprint,
                    client_dict(&body).as_deref(),
                    now as i64,
                )
                .await
                .map_err(Error::from)?;
            (id, Vec::new())
        }
    };

    let stage = auth.get("type").and_then(Value::as_str).unwrap_or_default();
    let offered = flows.iter().any(|f| f.contains(&stage));
    let passed = offered
        && match stage {
            DUMMY => true,
            REGISTRATION_TOKEN => auth
                .get("token")
                .and_then(Value::as_str)
                .is_some_and(|t| app.config.registration_tokens.iter().any(|valid| valid == t)),
            PASSWORD => check_password_stage(app, auth, user, step.client_ip).await?,
            _ => false,
        };
    if !passed {
        let message = match stage {
            PASSWORD => "Invalid password",
            REGISTRATION_TOKEN => "Invalid registration token",
            _ => "Unsupported authentication stage",
        };
        return Err(challenge(flows, &session_id, &completed, Some(message)));
    }
    if !completed.iter().any(|c| c == stage) {
        completed.push(stage.to_owned());
    }
    if flows.iter().any(|flow| flow.iter().all(|s| completed.iter().any(|c| c == s))) {
        if keep {
            app.db.set_uia_completed(&session_id, &completed).await.map_err(Error::from)?;
        } else {
            // Single use: of two requests completing one session at once, only one proceeds.
            if !app.db.delete_uia_session(&session_id).await.map_err(Error::from)? {
                return Err(Error::new(ErrorKind::Unknown, "Unknown UIA session"));
            }
        }
        return Ok(Completed { session: session_id });
    }
    app.db.set_uia_completed(&session_id, &completed).await.map_err(Error::from)?;
    Err(challenge(flows, &session_id, &completed, None))
}

async fn check_password_stage(
    app: &App,
    auth: &Value,
    user: Option<&UserId>,
    client_ip: Option<std::net::IpAddr>,
) -> Result<bool, Error> {
    let Some(user) = user else { return Ok(false) };
    let claimed = auth
        .get("identifier")
        .and_then(|i| i.get("user"))
        .or_else(|| auth.get("user"))
        .and_then(Value::as_str);
    if let Some(claimed) = claimed {
        let matches = claimed == user.as_str() || claimed == user.localpart();
        if !matches {
            // Authenticating as someone else is not a wrong password: it is refused outright.
            return Err(Error::forbidden("The user authenticating does not own this session"));
        }
    }
    let Some(password) = auth.get("password").and_then(Value::as_str) else {
        return Ok(false);
    };
    let Some(record) = app.db.user(user.as_str()).await.map_err(Error::from)? else {
        return Ok(false);
    };
    match record.password_hash {
        Some(hash) => app.passwords.check(&app.limiter, user, client_ip, password.to_owned(), hash).await,
        None => Ok(false),
    }
}
