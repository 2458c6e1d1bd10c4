//! Exclusive claims: the user ids and room aliases that an application service or a plugin
//! (a bridge) owns. Nobody else may register a claimed user id or create a claimed alias; the
//! owner and the users it acts as may. Every path that registers users or creates aliases asks
//! [`Claims`], so the rule lives here once.

use crate::registration::Namespace;

/// What one owner claims.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Who claims it (`appservice irc`, `plugin irc`), for error messages and logs.
    pub owner: String,
    /// The owner's own user (an appservice's sender, a plugin's bot).
    pub own_user: String,
    /// For a plugin: its id. A plugin acts only as accounts it owns (marked in the database),
    /// not as every id its regexes match.
    pub plugin: Option<String>,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
}

impl Claim {
    /// Whether the owner acts as this user: its own user, or — for a plugin — an account the
    /// plugin owns (`user_plugin`: the plugin owning the account, if any), or — for an
    /// application service — one in its user namespaces.
    pub fn acts_as(&self, user_id: &str, user_plugin: Option<&str>) -> bool {
        if user_id == self.own_user {
            return true;
        }
        match &self.plugin {
            Some(plugin) => user_plugin == Some(plugin.as_str()),
            None => self.users.iter().any(|ns| ns.regex.is_match(user_id)),
        }
    }

    /// Whether the user id is in the owner's user namespaces (exclusive or not).
    pub fn covers_user(&self, user_id: &str) -> bool {
        self.users.iter().any(|ns| ns.regex.is_match(user_id))
    }

    /// Whether the user id is in an exclusive user namespace.
    pub fn reserves_user(&self, user_id: &str) -> bool {
        self.users.iter().any(|ns| ns.exclusive && ns.regex.is_match(user_id))
    }

    /// Whether the alias is in an exclusive alias namespace.
    pub fn reserves_alias(&self, alias: &str) -> bool {
        self.aliases.iter().any(|ns| ns.exclusive && ns.regex.is_match(alias))
    }
}

/// Every exclusive claim of the server.
#[derive(Debug, Clone, Default)]
pub struct Claims(Vec<Claim>);

impl Claims {
    pub fn new(claims: Vec<Claim>) -> Claims {
        Claims(claims)
    }

    /// Who reserves this user id, if anyone: a client may not register it.
    pub fn user_reserved_by(&self, user_id: &str) -> Option<&str> {
        self.0.iter().find(|c| c.reserves_user(user_id)).map(|c| c.owner.as_str())
    }

    /// Whether any owner claims this alias exclusively.
    pub fn alias_reserved(&self, alias: &str) -> bool {
        self.0.iter().any(|c| c.reserves_alias(alias))
    }

    /// Who keeps `creator` (owned by plugin `creator_plugin`, if any) from creating this alias,
    /// if anyone: an owner that claims it exclusively and does not act as `creator`.
    pub fn alias_reserved_against(
        &self,
        alias: &str,
        creator: &str,
        creator_plugin: Option<&str>,
    ) -> Option<&str> {
        self.0
            .iter()
            .find(|c| c.reserves_alias(alias) && !c.acts_as(creator, creator_plugin))
            .map(|c| c.owner.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            owner: "plugin irc".into(),
            own_user: "@irc:example.org".into(),
            plugin: Some("irc".into()),
            users: vec![Namespace::new("@irc_.*:example.org", true).unwrap()],
            aliases: vec![
                Namespace::new("#irc_.*:example.org", true).unwrap(),
                Namespace::new("#shared_.*:example.org", false).unwrap(),
            ],
        }
    }

    #[test]
    fn exclusive_ids_are_reserved_for_their_owner_and_its_users() {
        let claims = Claims::new(vec![claim()]);
        assert_eq!(claims.user_reserved_by("@irc_bob:example.org"), Some("plugin irc"));
        assert_eq!(claims.user_reserved_by("@irc_bob:example.org.evil"), None, "whole ids only");
        assert_eq!(claims.user_reserved_by("@alice:example.org"), None);
        let against = |alias: &str, user: &str, plugin: Option<&str>| {
            claims.alias_reserved_against(alias, user, plugin)
        };
        assert_eq!(against("#irc_test:example.org", "@alice:example.org", None), Some("plugin irc"));
        assert_eq!(against("#irc_test:example.org", "@irc:example.org", None), None, "the bot");
        assert_eq!(against("#irc_test:example.org", "@irc_bob:example.org", Some("irc")), None, "a puppet");
        assert_eq!(
            against("#irc_test:example.org", "@irc_fan:example.org", None),
            Some("plugin irc"),
            "an account matching the regex that the plugin does not own"
        );
        assert_eq!(against("#shared_x:example.org", "@alice:example.org", None), None);
    }
}
