//! The configuration (with its defaults), the per-room settings and rate-limit counters in the
//! plugin's key-value store, and the record of honoured `!ai stop`s.
//!
//! Keys: `room/<room id>/model`, `room/<room id>/prompt` (kept until `!ai reset`),
//! `rate/user/<user id>/<minute>`, `rate/room/<room id>/<minute>` (counters, expiring after two
//! minutes; `<minute>` is Unix time in minutes), `stopped/<event id of the !ai stop>` (ten
//! minutes), `answered/<event id of the prompt>` (a day).

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
const ANSWERED_TTL_MS: u64 = 86_400_000;

/// The power level needed to change the bot's settings in a room (a moderator's).
pub const MODERATOR_LEVEL: i64 = 50;
/// The longest room system prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 2_000;
/// The longest model name, in characters (of `[A-Za-z0-9._:/-]`).
pub const MAX_MODEL_CHARS: usize = 100;

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

/// Whether `sender` may change the bot's settings in a room whose `m.room.power_levels`
/// content is `power_levels`: a level (`users[sender]`, else `users_default`, else 0) of at
/// least [`MODERATOR_LEVEL`], or being one of the room's privileged creators (`is_creator`,
/// rooms of version 12 on). A room without power levels lets everyone.
pub fn may_change_settings(power_levels: Option<&Value>, sender: &str, is_creator: bool) -> bool {
    let Some(levels) = power_levels else { return true };
    // Levels are integers; old rooms may hold them as strings.
    let level = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    let mine = level(&levels["users"][sender]).or_else(|| level(&levels["users_default"])).unwrap_or(0);
    is_creator || mine >= MODERATOR_LEVEL
}

/// Whether `model` is an acceptable model name: 1 to [`MAX_MODEL_CHARS`] characters of
/// `[A-Za-z0-9._:/-]`.
pub fn valid_model(model: &str) -> bool {
    (1..=MAX_MODEL_CHARS).contains(&model.len())
        && model.chars().all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c))
}

/// Whether `prompt` is short enough for a room's system prompt ([`MAX_PROMPT_CHARS`]).
pub fn valid_prompt(prompt: &str) -> bool {
    prompt.chars().count() <= MAX_PROMPT_CHARS
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

fn answered_key(prompt_event: &str) -> String {
    format!("answered/{prompt_event}")
}

/// Records that the prompt `prompt_event` was answered (the final edit or an apology sent), so
/// that a redelivery of it does not ask again.
pub fn record_answered(prompt_event: &str) -> sdk::Result<()> {
    Kv::new().ttl_ms(ANSWERED_TTL_MS).put_str(&answered_key(prompt_event), "1")?;
    Ok(())
}

/// Whether the prompt `prompt_event` was answered already.
pub fn was_answered(prompt_event: &str) -> sdk::Result<bool> {
    Ok(Kv::new().get(&answered_key(prompt_event))?.is_some())
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
    fn who_may_change_settings() {
        let levels = json!({ "users": { "@alice:x": 100, "@mod:x": 50, "@old:x": "50", "@low:x": 49 }, "users_default": 0 });
        for (user, may) in
            [("@alice:x", true), ("@mod:x", true), ("@old:x", true), ("@low:x", false), ("@bob:x", false)]
        {
            assert_eq!(may_change_settings(Some(&levels), user, false), may, "{user}");
        }
        // Privileged creators (version 12 on) are not listed.
        assert!(may_change_settings(Some(&levels), "@bob:x", true));
        assert!(may_change_settings(Some(&json!({ "users_default": 50 })), "@bob:x", false));
        assert!(!may_change_settings(Some(&json!({})), "@bob:x", false));
        assert!(may_change_settings(None, "@bob:x", false));
    }

    #[test]
    fn settings_caps() {
        for model in ["gpt-4o-mini", "llama3.1:8b", "openai/gpt-4o", "a_b", &"m".repeat(100)] {
            assert!(valid_model(model), "{model}");
        }
        for model in ["", &"m".repeat(101), "gpt 4", "gpt-4o!", "modèle", "a\nb"] {
            assert!(!valid_model(model), "{model}");
        }
        assert!(valid_prompt(&"é".repeat(2_000)));
        assert!(!valid_prompt(&"a".repeat(2_001)));
        assert_eq!(answered_key("$p"), "answered/$p");
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
