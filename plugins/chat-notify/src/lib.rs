//! chat-notify: posts one short human message per Okta event it subscribes to ("Guest access
//! granted: Jane Doe <jane@example.net> joined O365Guest") to a Slack or Microsoft Teams
//! incoming webhook.
//!
//! The logic is plain Rust over one small [`Host`] trait, so it is tested natively (`cargo
//! test -p chat-notify`); only `src/component.rs` (wasm32 only) binds that trait to the
//! hookhost WIT imports and exports `handler.handle`.
//!
//! - Secret `webhook_url`: the whole incoming-webhook URL. It carries the channel's
//!   credential, so it never appears in a log line, a summary or an error (it is replaced by
//!   `<webhook_url>` wherever the host's own messages would quote it).
//! - Config `format`: `slack` (`{"text": …}`), `teams` (an Adaptive Card message, which Teams
//!   Workflows webhooks and legacy connectors both accept) or `teams-messagecard` (the legacy
//!   Office 365 connector card); `added_text` and `removed_text` lead the message.
//! - 429 and 5xx answers and network failures are retryable, never sooner than the service's
//!   `Retry-After`; any other refusal is permanent and names what to fix.
//!
//! A notification is not idempotent: a delivery that is retried after the service accepted
//! it (its answer was lost) or replayed by an operator posts again. That is the right side to
//! err on for a notice; the plugin keeps no state.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod message;

#[cfg(target_arch = "wasm32")]
mod component;

pub use message::{render, Format};

/// One party of the event (WIT `types.party`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: String,
    /// Okta object type: `User`, `UserGroup`, …
    pub kind: String,
    pub alternate_id: Option<String>,
    pub display_name: Option<String>,
}

/// The event (WIT `types.event`; the raw JSON is not needed here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub targets: Vec<Party>,
}

/// Why a run failed (WIT `types.failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Retryable { message: String, retry_after_ms: Option<u64> },
    Permanent(String),
}

/// An outbound POST (WIT `http.request` with method `post`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer, whatever its status (WIT `http.response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why no answer came back (WIT `http.http-error`), with the host's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Denied(String),
    InvalidRequest(String),
    BudgetExhausted(String),
    Timeout(String),
    Connect(String),
    ResponseTooLarge(String),
}

/// Log levels used here (WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// What the plugin needs from whoever runs it: the hookhost imports in the component, a
/// scripted fake in tests.
pub trait Host {
    /// Send one POST and wait for the whole answer.
    ///
    /// # Errors
    /// No answer came back; the host's message says why.
    fn post(&mut self, request: Post) -> Result<Response, HttpError>;
    /// A granted secret.
    fn secret(&self, name: &str) -> Option<String>;
    /// The effective config value of `key`.
    fn config(&self, key: &str) -> Option<String>;
    /// One line for the attempt's history.
    fn log(&mut self, level: Level, message: &str);
}

/// Posts the event's message; returns the history's one-line summary.
///
/// # Errors
/// [`Failure::Retryable`] when the service is throttling, failing or unreachable;
/// [`Failure::Permanent`] when the settings are wrong or the service refuses the message.
pub fn handle(host: &mut impl Host, event: &Event) -> Result<String, Failure> {
    let format = match host.config("format").as_deref().map(Format::parse) {
        None => Format::Slack,
        Some(Ok(f)) => f,
        Some(Err(e)) => return Err(Failure::Permanent(e)),
    };
    let url = match host.secret("webhook_url") {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u,
        Some(_) => {
            return Err(Failure::Permanent(
                "secret webhook_url is not an http(s) URL: set [plugins.chat-notify.secrets] webhook_url to the incoming-webhook URL the service gave you".into(),
            ))
        }
        None => {
            return Err(Failure::Permanent(
                "secret webhook_url is not configured: set [plugins.chat-notify.secrets] webhook_url to the incoming-webhook URL (Slack: an app's Incoming Webhooks page; Teams: the channel's Workflows \"Send webhook alerts to a channel\")".into(),
            ))
        }
    };
    let text = message::text(event, |k| host.config(k));
    let request = Post {
        url: url.clone(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: render(format, &text).into_bytes(),
    };
    let scrub = |m: &str| m.replace(&url, "<webhook_url>");
    let service = format.service();
    let response = match host.post(request) {
        Ok(r) => r,
        Err(HttpError::Timeout(m) | HttpError::Connect(m)) => {
            return Err(Failure::Retryable {
                message: format!("{service} webhook did not answer: {}", scrub(&m)),
                retry_after_ms: None,
            })
        }
        Err(
            HttpError::Denied(m)
            | HttpError::InvalidRequest(m)
            | HttpError::BudgetExhausted(m)
            | HttpError::ResponseTooLarge(m),
        ) => return Err(Failure::Permanent(format!("cannot post to the {service} webhook: {}", scrub(&m)))),
    };
    let answer: String = String::from_utf8_lossy(&response.body).chars().take(200).collect();
    host.log(Level::Debug, &format!("POST <webhook_url> ({service}) → {} {answer}", response.status));
    match response.status {
        200..=299 => Ok(format!("posted to {service}: {text}")),
        429 | 500..=599 => Err(Failure::Retryable {
            message: format!("{service} webhook answered {}: {answer}", response.status),
            retry_after_ms: retry_after_ms(&response.headers),
        }),
        400..=499 => Err(Failure::Permanent(format!(
            "{service} refused the message: {} {answer}; check secret webhook_url (a removed webhook or archived channel answers 403/404/410) and config format",
            response.status
        ))),
        other => Err(Failure::Permanent(format!("{service} webhook answered {other}: {answer}"))),
    }
}

/// `Retry-After` as whole or decimal seconds (an HTTP date falls back to the host's backoff).
fn retry_after_ms(headers: &[(String, String)]) -> Option<u64> {
    let value = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))?.1.trim();
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        answers: Vec<Result<Response, HttpError>>,
        posts: Vec<Post>,
        config: HashMap<&'static str, String>,
        secret: Option<String>,
        logs: Vec<String>,
    }

    const URL: &str = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";

    fn fake(answers: Vec<Result<Response, HttpError>>) -> Fake {
        Fake {
            answers,
            posts: vec![],
            config: HashMap::from([
                ("format", "slack".to_string()),
                ("added_text", "Guest access granted".into()),
                ("removed_text", "Guest access removed".into()),
            ]),
            secret: Some(URL.into()),
            logs: vec![],
        }
    }

    impl Host for Fake {
        fn post(&mut self, request: Post) -> Result<Response, HttpError> {
            self.posts.push(request);
            self.answers.remove(0)
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "webhook_url").then(|| self.secret.clone()).flatten()
        }
        fn config(&self, key: &str) -> Option<String> {
            self.config.get(key).cloned()
        }
        fn log(&mut self, _level: Level, message: &str) {
            self.logs.push(message.into());
        }
    }

    fn ok() -> Result<Response, HttpError> {
        Ok(Response { status: 200, headers: vec![], body: b"ok".to_vec() })
    }

    pub(crate) fn event(event_type: &str) -> Event {
        Event {
            id: "e1".into(),
            event_type: event_type.into(),
            targets: vec![
                Party {
                    id: "00u1".into(),
                    kind: "User".into(),
                    alternate_id: Some("jane@example.net".into()),
                    display_name: Some("Jane Doe".into()),
                },
                Party {
                    id: "00g1".into(),
                    kind: "UserGroup".into(),
                    alternate_id: Some("unknown".into()),
                    display_name: Some("O365Guest".into()),
                },
            ],
        }
    }

    #[test]
    fn posts_slack_text_for_an_add() {
        let mut host = fake(vec![ok()]);
        let summary = handle(&mut host, &event("group.user_membership.add")).unwrap();
        assert_eq!(summary, "posted to Slack: Guest access granted: Jane Doe <jane@example.net> joined O365Guest");
        let post = &host.posts[0];
        assert_eq!(post.url, URL);
        let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(body["text"], "Guest access granted: Jane Doe &lt;jane@example.net&gt; joined O365Guest");
        assert!(host.logs.iter().all(|l| !l.contains("XXXXSECRET")));
    }

    #[test]
    fn posts_an_adaptive_card_to_teams_for_a_remove() {
        let mut host = fake(vec![Ok(Response { status: 202, headers: vec![], body: vec![] })]);
        host.config.insert("format", "teams".into());
        let summary = handle(&mut host, &event("group.user_membership.remove")).unwrap();
        assert!(summary.ends_with("Guest access removed: Jane Doe <jane@example.net> left O365Guest"), "{summary}");
        let body: serde_json::Value = serde_json::from_slice(&host.posts[0].body).unwrap();
        assert_eq!(body["type"], "message");
        let att = &body["attachments"][0];
        assert_eq!(att["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(att["content"]["type"], "AdaptiveCard");
        assert_eq!(
            att["content"]["body"][0]["text"],
            "Guest access removed: Jane Doe <jane@example.net> left O365Guest"
        );
    }

    #[test]
    fn throttling_is_retryable_with_retry_after_and_the_url_never_leaks() {
        let mut host = fake(vec![Ok(Response {
            status: 429,
            headers: vec![("retry-after".into(), "30".into())],
            body: b"rate_limited".to_vec(),
        })]);
        let err = handle(&mut host, &event("group.user_membership.add")).unwrap_err();
        assert_eq!(
            err,
            Failure::Retryable {
                message: "Slack webhook answered 429: rate_limited".into(),
                retry_after_ms: Some(30_000)
            }
        );

        let mut host = fake(vec![Err(HttpError::Connect(format!("error sending request for url ({URL})")))]);
        match handle(&mut host, &event("group.user_membership.add")).unwrap_err() {
            Failure::Retryable { message, .. } => {
                assert!(!message.contains("XXXXSECRET") && message.contains("<webhook_url>"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_and_missing_settings_are_permanent() {
        let mut host = fake(vec![Ok(Response { status: 404, headers: vec![], body: b"no_service".to_vec() })]);
        match handle(&mut host, &event("group.user_membership.add")).unwrap_err() {
            Failure::Permanent(m) => assert!(m.contains("404 no_service") && m.contains("webhook_url"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut host = fake(vec![]);
        host.secret = None;
        assert!(
            matches!(handle(&mut host, &event("group.user_membership.add")), Err(Failure::Permanent(m)) if m.contains("webhook_url"))
        );
        let mut host = fake(vec![]);
        host.config.insert("format", "discord".into());
        assert!(
            matches!(handle(&mut host, &event("group.user_membership.add")), Err(Failure::Permanent(m)) if m.contains("format"))
        );
        assert!(host.posts.is_empty());
    }
}
