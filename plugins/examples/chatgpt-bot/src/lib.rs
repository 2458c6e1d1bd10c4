//! The ChatGPT bot: answers Matrix messages with any OpenAI-compatible chat completions API,
//! in threads, streaming the answer into a reply it edits as the text arrives. See "The ChatGPT
//! bot" in `plugins/README.md` for what an admin configures and what users can do.
//!
//! - `lib.rs`: the registration, and which messages are answered;
//! - `addressing.rs`: mentions, `!ai` and its sub-commands (pure);
//! - `conversation.rs`: a thread as chat turns, trimmed to a budget (pure);
//! - `openai.rs`: the request body and the streamed chunks (pure);
//! - `texts.rs`: what the bot says besides answers (pure);
//! - `settings.rs`: configuration, per-room settings and rate limits (key-value store);
//! - `room.rs`: reads and sends in the room (host calls);
//! - `answer.rs`: the streaming loop.

mod addressing;
mod answer;
mod conversation;
mod openai;
mod room;
mod settings;
mod texts;

use std::time::Instant;

use lattice_plugin_sdk::{
    self as sdk, Command, ConfigKey, ConfigKind, Delivery, Event, Plugin, Registration,
};

use crate::addressing::Request;
use crate::settings::Config;

struct ChatGptBot;

const HELP: &str = "Ask me with `!ai <question>`, by mentioning me, or anything in a direct chat with me. \
    I answer in a thread, and every message in that thread continues the conversation. \
    Room moderators can set this room's model and system prompt with `!ai model <name>` and \
    `!ai prompt <text>`, and go back to the defaults with `!ai reset`; `!ai stop` in the thread \
    stops an answer being written.";

/// The body of a message the bot may answer: an `m.text` that is not an edit.
fn text_body(event: &Event) -> Option<&str> {
    let is_edit = event.relation().is_some_and(|r| r.rel_type == "m.replace")
        || event.content().get("m.new_content").is_some();
    let own = event.sender() == sdk::whoami();
    if !event.is_message() || event.msgtype() != Some("m.text") || is_edit || own {
        return None;
    }
    event.body()
}

/// `!ai …` sub-commands: per-room settings, stop and help, answered with a notice in thread.
fn settings_command(event: &Event, request: Request) -> sdk::Result<()> {
    let room = event.room_id();
    let config = Config::load();
    let changes = matches!(request, Request::SetModel(_) | Request::SetPrompt(_) | Request::Reset);
    let allowed =
        || room::settle(room::may_change_settings(room, event.sender()), "reading the power levels");
    if changes && allowed()? != Some(true) {
        room::settle(room::notice_in_thread(event, texts::NOT_MODERATOR), "replying to a command")?;
        return Ok(());
    }
    let reply = match request {
        Request::Ask(_) => unreachable!("prompts are answered"),
        Request::Help => HELP.to_owned(),
        Request::SetModel(model) if !settings::valid_model(model) => texts::BAD_MODEL.to_owned(),
        Request::SetModel(model) => {
            settings::set_model(room, model)?;
            format!("Model for this room: {model}.")
        }
        Request::SetPrompt(prompt) if !settings::valid_prompt(prompt) => texts::PROMPT_TOO_LONG.to_owned(),
        Request::SetPrompt(prompt) => {
            settings::set_prompt(room, prompt)?;
            "System prompt for this room set.".to_owned()
        }
        Request::ShowModel => match settings::room_settings(room)?.model {
            Some(model) => format!("Model for this room: {model} (the default is {}).", config.model),
            None => format!("Model: {} (the default).", config.model),
        },
        Request::ShowPrompt => match settings::room_settings(room)?.prompt {
            Some(prompt) => format!("System prompt for this room: {prompt}"),
            None => format!("System prompt (the default): {}", config.system_prompt),
        },
        Request::Reset => {
            settings::reset(room)?;
            format!("This room is back to the default model ({}) and system prompt.", config.model)
        }
        Request::Stop => {
            // Deliveries come one at a time, so nothing is being written now; the answer this
            // stop was meant for (if any) already looked for it while streaming.
            if settings::was_honoured(event.id())? {
                room::settle(room::react(event, "✅"), "acknowledging the stop")?;
                return Ok(());
            }
            texts::NOTHING_TO_STOP.to_owned()
        }
    };
    room::settle(room::notice_in_thread(event, &reply), "replying to a command")?;
    Ok(())
}

impl Plugin for ChatGptBot {
    fn registration() -> Registration {
        Registration::new("1.0.0")
            .command(addressing::WORD)
            .config_key(ConfigKey::required(
                "base_url",
                ConfigKind::String,
                "The OpenAI-compatible API, e.g. https://api.openai.com/v1 (the bot POSTs to {base_url}/chat/completions).",
            ))
            .config_key(ConfigKey::required("model", ConfigKind::String, "The model, e.g. gpt-4o-mini."))
            .config_key(ConfigKey::required(
                "api_key",
                ConfigKind::Secret,
                "The API key, sent as Authorization: Bearer; write { env = \"VARIABLE\" }.",
            ))
            .config_key(ConfigKey::optional(
                "system_prompt",
                ConfigKind::String,
                "The system prompt (default \"You are a helpful assistant.\").",
            ))
            .config_key(ConfigKey::optional(
                "max_context_chars",
                ConfigKind::Integer,
                "The most characters of conversation sent, about 4 a token (default 12000).",
            ))
            .config_key(ConfigKey::optional(
                "rate_per_user_per_minute",
                ConfigKind::Integer,
                "Prompts one user may send per minute (default 5; 0: no limit).",
            ))
            .config_key(ConfigKey::optional(
                "rate_per_room_per_minute",
                ConfigKind::Integer,
                "Prompts one room may send per minute (default 20; 0: no limit).",
            ))
            .config_key(ConfigKey::optional(
                "answer_timeout_ms",
                ConfigKind::Integer,
                "The longest one answer may take (default 25000); keep it below grants.wall_ms_per_call.",
            ))
    }

    fn on_event(event: &Event, delivery: Delivery) -> sdk::Result<()> {
        let started = Instant::now();
        if sdk::accept_invite(event)? {
            return Ok(());
        }
        let Some(body) = text_body(event) else { return Ok(()) };
        let bot = sdk::whoami();
        // `!`-commands (other bots') and empty texts are never prompts.
        let Some(text) = addressing::user_text(body, bot) else { return Ok(()) };
        let room = event.room_id();
        let addressed = addressing::mentions(event.content(), bot)
            || match event.thread_root() {
                Some(root) => {
                    room::settle(room::bot_answered_in_thread(room, root, bot), "reading the thread")?
                        .unwrap_or(false)
                }
                None => false,
            }
            || room::settle(room::is_direct_chat(room, bot), "reading the members")?.unwrap_or(false);
        if !addressed {
            return Ok(());
        }
        answer::answer(event, text, started, delivery)
    }

    fn on_command(command: &Command, delivery: Delivery) -> sdk::Result<()> {
        let started = Instant::now();
        if command.name != addressing::WORD || text_body(&command.event).is_none() {
            return Ok(());
        }
        match addressing::parse_request(&command.args) {
            Request::Ask(text) => answer::answer(&command.event, text, started, delivery),
            request => settings_command(&command.event, request),
        }
    }
}

lattice_plugin_sdk::export_plugin!(ChatGptBot);
