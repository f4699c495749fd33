//! The event handed to the plugin and what it hands back, mirroring the WIT `types` interface.

use std::fmt;

/// One party of an Okta System Log event: the actor, or one of the targets (WIT `party`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// Okta object id, e.g. `00u1abcd` for a user or `00g1abcd` for a group.
    pub id: String,
    /// Okta object type, e.g. `User`, `UserGroup`. Targets are selected by this, never by position.
    pub kind: String,
    /// A user's login, or `unknown` for groups; `None` when Okta sent null.
    pub alternate_id: Option<String>,
    /// A user's full name or a group's name; `None` when Okta sent null.
    pub display_name: Option<String>,
}

/// One Okta System Log event (WIT `event`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The LogEvent `uuid`: unique per event, stable across Okta's retries.
    pub id: String,
    /// The Okta event type, e.g. `group.user_membership.add`.
    pub event_type: String,
    /// When Okta published the event (RFC 3339, as Okta sent it).
    pub published: String,
    /// Who caused the event, when Okta named someone.
    pub actor: Option<Party>,
    /// The event's targets, in Okta's order.
    pub targets: Vec<Party>,
    /// The whole LogEvent as JSON text.
    pub raw: String,
}

/// What a successful run did, in one line for the execution history (WIT `outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A short human summary, e.g. `invited jane@example.com as Guest 5f3c…`.
    pub summary: String,
}

/// Why a run failed, and whether running it again may help (WIT `failure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A passing failure (throttling, an outage, a store hiccup): the host retries with
    /// backoff, never sooner than `retry_after_ms` when given.
    Retryable {
        /// What went wrong.
        message: String,
        /// The earliest time to retry, in milliseconds from now (e.g. Graph's `Retry-After`).
        retry_after_ms: Option<u64>,
    },
    /// Running again will not help (bad configuration, a missing permission, a refused change).
    Permanent(String),
}

impl Failure {
    /// A retryable failure without a retry-after hint.
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure::Retryable { message: message.into(), retry_after_ms: None }
    }

    /// The failure's message, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable { message, .. } => message,
            Failure::Permanent(message) => message,
        }
    }

    /// Rewrites the message, keeping the kind and the retry hint.
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            Failure::Retryable { message, retry_after_ms } => {
                Failure::Retryable { message: f(message), retry_after_ms }
            }
            Failure::Permanent(message) => Failure::Permanent(f(message)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Retryable { message, retry_after_ms: Some(ms) } => {
                write!(f, "retryable (after {ms} ms): {message}")
            }
            Failure::Retryable { message, .. } => write!(f, "retryable: {message}"),
            Failure::Permanent(message) => write!(f, "permanent: {message}"),
        }
    }
}

impl std::error::Error for Failure {}
