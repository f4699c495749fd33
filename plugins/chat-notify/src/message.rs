//! The message: its words, and the JSON body each service's incoming webhook documents.

use serde_json::json;

use crate::Event;

/// Which service's webhook body to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack incoming webhook: `{"text": "…"}` (mrkdwn, with `&`, `<`, `>` escaped).
    Slack,
    /// Teams: a `message` with one Adaptive Card attachment, the body Teams Workflows
    /// ("Send webhook alerts to a channel") documents; legacy connectors accept it too.
    Teams,
    /// Teams legacy Office 365 connector: a `MessageCard`.
    TeamsMessageCard,
}

impl Format {
    /// Parses config `format`.
    ///
    /// # Errors
    /// An unknown name; the message lists the known ones.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "slack" => Ok(Format::Slack),
            "teams" => Ok(Format::Teams),
            "teams-messagecard" => Ok(Format::TeamsMessageCard),
            other => Err(format!(
                "config format {other:?} is not one of slack, teams, teams-messagecard; set [plugins.chat-notify.config] format"
            )),
        }
    }

    /// The service's name, for summaries and errors.
    pub fn service(self) -> &'static str {
        match self {
            Format::Slack => "Slack",
            Format::Teams | Format::TeamsMessageCard => "Teams",
        }
    }
}

/// The human message, e.g. `Guest access granted: Jane Doe <jane@example.net> joined O365Guest`.
pub fn text(event: &Event, config: impl Fn(&str) -> Option<String>) -> String {
    let of_kind = |kind: &str| event.targets.iter().find(|t| t.kind == kind);
    let user = of_kind("User").map_or_else(
        || "an unknown user".to_string(),
        |u| match (&u.display_name, &u.alternate_id) {
            (Some(name), Some(login)) => format!("{name} <{login}>"),
            (None, Some(login)) => login.clone(),
            (Some(name), None) => format!("{name} ({})", u.id),
            (None, None) => u.id.clone(),
        },
    );
    let group = of_kind("UserGroup")
        .map(|g| g.display_name.clone().unwrap_or_else(|| g.id.clone()))
        .unwrap_or_else(|| "a group".into());
    let lead = |key: &str, default: &str| config(key).filter(|s| !s.is_empty()).unwrap_or_else(|| default.into());
    match event.event_type.as_str() {
        "group.user_membership.add" => format!("{}: {user} joined {group}", lead("added_text", "Guest access granted")),
        "group.user_membership.remove" => {
            format!("{}: {user} left {group}", lead("removed_text", "Guest access removed"))
        }
        "user.lifecycle.deactivate" => format!("Okta user deactivated: {user}"),
        "user.lifecycle.delete.initiated" => format!("Okta user deletion started: {user}"),
        other => format!("Okta event {other}: {user}"),
    }
}

/// Slack's three control characters, escaped as its message formatting requires.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The JSON body for `format`.
pub fn render(format: Format, text: &str) -> String {
    let body = match format {
        Format::Slack => json!({ "text": slack_escape(text) }),
        Format::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{ "type": "TextBlock", "text": text, "wrap": true }],
                },
            }],
        }),
        Format::TeamsMessageCard => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": text,
            "text": text,
        }),
    };
    body.to_string()
}
