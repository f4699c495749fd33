//! The Okta payloads hookhost understands: the Event Hook delivery envelope and the System
//! Log `LogEvent` inside it. Pure parsing, no I/O; ingest, the CLI and the runtime share it.
//!
//! Fields are read by name (Okta's key order differs between doc versions) and unknown
//! fields are ignored, since Okta adds fields over time. Only what hookhost needs is
//! required: the envelope's `data.events` array, and each event's `uuid`, `eventType` and
//! `published`. Each event keeps its raw JSON so a plugin can read anything else.

use serde::Deserialize;
use serde_json::Value;

/// One party of an event: the actor or a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub id: String,
    /// Okta's `type`: `User`, `UserGroup`, ...
    pub kind: String,
    pub alternate_id: Option<String>,
    pub display_name: Option<String>,
}

/// One Okta System Log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The LogEvent `uuid`: the identity hookhost de-duplicates on.
    pub uuid: String,
    pub event_type: String,
    /// As Okta sent it (RFC 3339).
    pub published: String,
    pub actor: Option<Party>,
    pub targets: Vec<Party>,
    /// The whole LogEvent as JSON text.
    pub raw: String,
}

/// A parsed Event Hook delivery (one POST from Okta).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The envelope `eventId` (one per POST; Okta's retry of a POST reuses it).
    pub delivery_id: Option<String>,
    pub events: Vec<Event>,
}

/// What is wrong with a payload, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be a JSON object (an Okta event hook delivery)")]
    NotAnObject,
    #[error("missing field `data.events` (an array of Okta LogEvents)")]
    MissingEvents,
    #[error("`data.events` must be an array")]
    EventsNotArray,
    #[error("`data.events[{index}]`: {problem}")]
    Event { index: usize, problem: String },
}

#[derive(Deserialize)]
struct RawParty {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "alternateId")]
    alternate_id: Option<String>,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
}

impl RawParty {
    fn into_party(self) -> Party {
        Party {
            id: self.id.unwrap_or_default(),
            kind: self.kind.unwrap_or_default(),
            alternate_id: self.alternate_id,
            display_name: self.display_name,
        }
    }
}

impl Event {
    /// Reads one LogEvent.
    ///
    /// # Errors
    /// A required field (`uuid`, `eventType`, `published`) is missing, empty or not a string,
    /// or `actor`/`target` has the wrong shape.
    pub fn from_value(value: &Value) -> Result<Event, String> {
        let obj = value.as_object().ok_or("an event must be a JSON object")?;
        let text = |name: &str| -> Result<String, String> {
            match obj.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(format!("`{name}` is empty")),
                Some(_) => Err(format!("`{name}` must be a string")),
                None => Err(format!("missing field `{name}`")),
            }
        };
        let uuid = text("uuid")?;
        let event_type = text("eventType")?;
        let published = text("published")?;
        if chrono::DateTime::parse_from_rfc3339(&published).is_err() {
            return Err(format!("`published` is not an RFC 3339 time: {published:?}"));
        }
        let actor = match obj.get("actor") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                RawParty::deserialize(v)
                    .map_err(|e| format!("`actor`: {e}"))?
                    .into_party(),
            ),
        };
        let targets = match obj.get("target") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    RawParty::deserialize(v)
                        .map(RawParty::into_party)
                        .map_err(|e| format!("`target[{i}]`: {e}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`target` must be an array".into()),
        };
        Ok(Event {
            uuid,
            event_type,
            published,
            actor,
            targets,
            raw: value.to_string(),
        })
    }

    /// The first target of the given Okta type (`User`, `UserGroup`).
    pub fn target(&self, kind: &str) -> Option<&Party> {
        self.targets.iter().find(|t| t.kind == kind)
    }

    /// The Okta id of the user this event is about: the `User` target, else the actor for
    /// user events. Dispatch orders events per subject.
    pub fn subject(&self) -> Option<&str> {
        self.target("User").map(|t| t.id.as_str())
    }
}

impl Delivery {
    /// Parses a full Event Hook delivery.
    ///
    /// # Errors
    /// Bad JSON, no `data.events` array, or an event without its required fields.
    pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        Self::from_value(&value)
    }

    /// Like [`Delivery::parse`], from parsed JSON.
    ///
    /// # Errors
    /// As [`Delivery::parse`].
    pub fn from_value(value: &Value) -> Result<Delivery, PayloadError> {
        let obj = value.as_object().ok_or(PayloadError::NotAnObject)?;
        let events = obj
            .get("data")
            .and_then(|d| d.get("events"))
            .ok_or(PayloadError::MissingEvents)?
            .as_array()
            .ok_or(PayloadError::EventsNotArray)?;
        let events = events
            .iter()
            .enumerate()
            .map(|(index, v)| {
                Event::from_value(v).map_err(|problem| PayloadError::Event { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delivery_id = obj
            .get("eventId")
            .or_else(|| obj.get("eventID"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Delivery {
            delivery_id,
            events,
        })
    }

    /// Accepts either a full delivery or a single LogEvent (what `plugin run --event` takes).
    ///
    /// # Errors
    /// As [`Delivery::parse`], or the single event's problem.
    pub fn parse_delivery_or_event(body: &[u8]) -> Result<Delivery, PayloadError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        if value.get("data").is_some() {
            return Self::from_value(&value);
        }
        let event = Event::from_value(&value)
            .map_err(|problem| PayloadError::Event { index: 0, problem })?;
        Ok(Delivery {
            delivery_id: None,
            events: vec![event],
        })
    }
}
