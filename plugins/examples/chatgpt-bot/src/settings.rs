//! The configuration (with its defaults), the per-room settings and rate-limit counters in the
//! plugin's key-value store, and the record of honoured `!ai stop`s.
//!
//! Keys: `room/<room id>/model`, `room/<room id>/prompt` (kept until `!ai reset`),
//! `rate/user/<user id>/<minute>`, `rate/room/<room id>/<minute>` (counters, expiring after two
//! minutes; `<minute>` is Unix time in minutes), `stopped/<event id of the !ai stop>` (ten
//! minutes).

use lattice_plugin_sdk::serde_json::Value;
use lattice_plugin_sdk::{self as sdk, Kv};

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
pub const DEFAULT_MAX_CONTEXT_CHARS: u64 = 12_000;
pub const DEFAULT_RATE_PER_USER: u64 = 5;
pub const DEFAULT_RATE_PER_ROOM: u64 = 20;
/// A little below the host's default `wall_ms_per_call` (30 s).
pub const DEFAULT_ANSWER_TIMEOUT_MS: u64 = 25_000;

const RATE_TTL_MS: u64 = 120_000;
const STOPPED_TTL_MS: u64 = 600_000;

/// The plugin's configuration, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub base_url: String,
    pub model: String,
    pub system_prompt: String,
    pub max_context_chars: usize,
    /// Prompts a user may send per minute (0: no limit).
    pub rate_per_user: u64,
    /// Prompts a room may send per minute (0: no limit).
    pub rate_per_room: u64,
    /// The longest one answer may take, request included, in ms.
    pub answer_timeout_ms: u64,
}

impl Config {
    /// From the `config` table (the host has checked the kinds and the required keys).
    pub fn from_json(config: &Value) -> Config {
        let text = |key: &str, default: &str| config[key].as_str().unwrap_or(default).to_owned();
        let number = |key: &str, default: u64| config[key].as_u64().unwrap_or(default);
        Config {
            base_url: text("base_url", ""),
            model: text("model", ""),
            system_prompt: text("system_prompt", DEFAULT_SYSTEM_PROMPT),
            max_context_chars: usize::try_from(number("max_context_chars", DEFAULT_MAX_CONTEXT_CHARS))
                .unwrap_or(usize::MAX),
            rate_per_user: number("rate_per_user_per_minute", DEFAULT_RATE_PER_USER),
            rate_per_room: number("rate_per_room_per_minute", DEFAULT_RATE_PER_ROOM),
            answer_timeout_ms: number("answer_timeout_ms", DEFAULT_ANSWER_TIMEOUT_MS).max(1_000),
        }
    }

    pub fn load() -> Config {
        Config::from_json(&sdk::config())
    }
}

/// A room's own model and system prompt, if set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSettings {
    pub model: Option<String>,
    pub prompt: Option<String>,
}

fn room_key(room: &str, what: &str) -> String {
    format!("room/{room}/{what}")
}

pub fn room_settings(room: &str) -> sdk::Result<RoomSettings> {
    let kv = Kv::new();
    Ok(RoomSettings {
        model: kv.get_str(&room_key(room, "model"))?,
        prompt: kv.get_str(&room_key(room, "prompt"))?,
    })
}

pub fn set_model(room: &str, model: &str) -> sdk::Result<()> {
    Kv::new().put_str(&room_key(room, "model"), model)?;
    Ok(())
}

pub fn set_prompt(room: &str, prompt: &str) -> sdk::Result<()> {
    Kv::new().put_str(&room_key(room, "prompt"), prompt)?;
    Ok(())
}

pub fn reset(room: &str) -> sdk::Result<()> {
    let kv = Kv::new();
    kv.delete(&room_key(room, "model"))?;
    kv.delete(&room_key(room, "prompt"))?;
    Ok(())
}

/// Whether a prompt may go to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Allowed,
    /// Over a limit: `first` for the first prompt over it this minute (the one the bot answers
    /// with a warning; later ones are ignored quietly).
    Refused {
        first: bool,
    },
}

/// The counter keys of `user` and `room` for the minute of `now_ms`.
pub fn rate_keys(user: &str, room: &str, now_ms: u64) -> (String, String) {
    let minute = now_ms / 60_000;
    (format!("rate/user/{user}/{minute}"), format!("rate/room/{room}/{minute}"))
}

/// What the `count`th prompt of a minute is under `limit` (0: no limit).
pub fn judge(count: u64, limit: u64) -> Rate {
    if limit == 0 || count <= limit { Rate::Allowed } else { Rate::Refused { first: count == limit + 1 } }
}

/// Counts one prompt of `user` in `room` now, and judges it (the user's limit first; a prompt
/// refused for the user does not count for the room).
pub fn count_prompt(config: &Config, user: &str, room: &str, now_ms: u64) -> sdk::Result<Rate> {
    let kv = Kv::new().ttl_ms(RATE_TTL_MS);
    let (user_key, room_key) = rate_keys(user, room, now_ms);
    let rate = judge(kv.increment(&user_key, 1)?, config.rate_per_user);
    if rate != Rate::Allowed {
        return Ok(rate);
    }
    Ok(judge(kv.increment(&room_key, 1)?, config.rate_per_room))
}

/// Records that the `!ai stop` message `stop_event` stopped an answer.
pub fn record_stop(stop_event: &str) -> sdk::Result<()> {
    Kv::new().ttl_ms(STOPPED_TTL_MS).put_str(&format!("stopped/{stop_event}"), "1")?;
    Ok(())
}

/// Whether the `!ai stop` message `stop_event` stopped an answer.
pub fn was_honoured(stop_event: &str) -> sdk::Result<bool> {
    Ok(Kv::new().get(&format!("stopped/{stop_event}"))?.is_some())
}

#[cfg(test)]
mod tests {
    use lattice_plugin_sdk::serde_json::json;

    use super::*;

    #[test]
    fn defaults() {
        let config =
            Config::from_json(&json!({ "base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini" }));
        assert_eq!(
            config,
            Config {
                base_url: "https://api.openai.com/v1".into(),
                model: "gpt-4o-mini".into(),
                system_prompt: "You are a helpful assistant.".into(),
                max_context_chars: 12_000,
                rate_per_user: 5,
                rate_per_room: 20,
                answer_timeout_ms: 25_000,
            }
        );
        let set = Config::from_json(&json!({
            "base_url": "b", "model": "m", "system_prompt": "Be brief.", "max_context_chars": 100,
            "rate_per_user_per_minute": 0, "rate_per_room_per_minute": 3, "answer_timeout_ms": 90_000,
        }));
        assert_eq!((set.system_prompt.as_str(), set.max_context_chars), ("Be brief.", 100));
        assert_eq!((set.rate_per_user, set.rate_per_room, set.answer_timeout_ms), (0, 3, 90_000));
    }

    #[test]
    fn rate_limits() {
        assert_eq!(
            rate_keys("@alice:x", "!r:x", 120_000 * 3 + 59_999),
            ("rate/user/@alice:x/6".to_owned(), "rate/room/!r:x/6".to_owned())
        );
        assert_eq!(judge(5, 5), Rate::Allowed);
        assert_eq!(judge(6, 5), Rate::Refused { first: true });
        assert_eq!(judge(7, 5), Rate::Refused { first: false });
        assert_eq!(judge(1_000, 0), Rate::Allowed);
    }
}
