//! The Okta payloads hookhost understands: the Event Hook delivery envelope and the System
//! Log `LogEvent` inside it. Pure parsing, no I/O; ingest, the CLI and the runtime share it.
//!
//! Fields are read by name (Okta's key order differs between doc versions) and unknown
//! fields are ignored, since Okta adds fields over time. Only what hookhost needs is
//! required: the envelope's `data.events` array, and each event's `uuid`, `eventType` and
//! `published`. Each event keeps its raw JSON so a plugin can read anything else.

mod duplicate_keys;

use serde::Deserialize;
use serde_json::Value;

pub use duplicate_keys::first_duplicate;

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
    #[error("duplicate key {key:?} in the object at {at}: a JSON object may name each key once")]
    DuplicateKey { key: String, at: String },
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
            Some(v) => Some(RawParty::deserialize(v).map_err(|e| format!("`actor`: {e}"))?.into_party()),
        };
        let targets = match obj.get("target") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    RawParty::deserialize(v).map(RawParty::into_party).map_err(|e| format!("`target[{i}]`: {e}"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`target` must be an array".into()),
        };
        Ok(Event { uuid, event_type, published, actor, targets, raw: value.to_string() })
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
    /// Bad JSON, an object repeating a key, no `data.events` array, or an event without its
    /// required fields.
    pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        reject_duplicate_keys(body)?;
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
            .map(|(index, v)| Event::from_value(v).map_err(|problem| PayloadError::Event { index, problem }))
            .collect::<Result<Vec<_>, _>>()?;
        let delivery_id = obj.get("eventId").or_else(|| obj.get("eventID")).and_then(Value::as_str).map(str::to_owned);
        Ok(Delivery { delivery_id, events })
    }

    /// Accepts either a full delivery or a single LogEvent (what `plugin run --event` takes).
    ///
    /// # Errors
    /// As [`Delivery::parse`], or the single event's problem.
    pub fn parse_delivery_or_event(body: &[u8]) -> Result<Delivery, PayloadError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
        reject_duplicate_keys(body)?;
        if value.get("data").is_some() {
            return Self::from_value(&value);
        }
        let event = Event::from_value(&value).map_err(|problem| PayloadError::Event { index: 0, problem })?;
        Ok(Delivery { delivery_id: None, events: vec![event] })
    }
}

/// A body that parsed may still repeat a key in some object, which serde_json resolves
/// silently (last one wins); refuse it, naming the key and where.
fn reject_duplicate_keys(body: &[u8]) -> Result<(), PayloadError> {
    match first_duplicate(body) {
        Some((key, at)) => Err(PayloadError::DuplicateKey { key, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! Property tests: whatever arrives at the Okta endpoint, the parser answers with a
    //! delivery or an error message (never a panic), and what it accepts is well-formed.

    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    /// Keys Okta payloads use, mixed with arbitrary ones, so generated objects reach the
    /// parser's real branches instead of only "missing field".
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "data", "events", "uuid", "eventType", "published", "actor", "target", "id",
                "type", "alternateId", "displayName", "eventId", "eventID",
            ])
            .prop_map(str::to_owned),
            1 => ".{0,12}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,24}".prop_map(Value::String),
            Just(Value::String("2026-11-28T10:00:00.000Z".into())),
        ];
        leaf.prop_recursive(6, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    fn good_event(uuid: &str) -> Value {
        json!({
            "uuid": uuid,
            "published": "2026-11-28T10:00:00.000Z",
            "eventType": "group.user_membership.add",
            "actor": {"id": "00uadmin", "type": "User", "alternateId": "admin@example.com"},
            "target": [
                {"id": "00u1", "type": "User", "alternateId": "jane@example.com", "displayName": "Jane"},
                {"id": "00g1", "type": "UserGroup", "alternateId": "unknown", "displayName": "O365Guest"}
            ]
        })
    }

    fn assert_well_formed(d: &Delivery) {
        for e in &d.events {
            assert!(!e.uuid.trim().is_empty() && !e.event_type.trim().is_empty());
            assert!(chrono::DateTime::parse_from_rfc3339(&e.published).is_ok());
            assert!(serde_json::from_str::<Value>(&e.raw).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            match Delivery::parse(&bytes) {
                Ok(d) => assert_well_formed(&d),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            let _ = Delivery::parse_delivery_or_event(&bytes);
        }

        #[test]
        fn arbitrary_json_is_a_delivery_or_a_message(v in json_value()) {
            let text = serde_json::to_vec(&v).unwrap();
            match Delivery::parse(&text) {
                Ok(d) => assert_well_formed(&d),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            if let Err(e) = Delivery::parse_delivery_or_event(&text) {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        /// One field of one event of an otherwise good delivery replaced by anything: a
        /// required field that is no longer a non-empty string is named in the error, with
        /// the event's index; nothing else of the batch is accepted on its own.
        #[test]
        fn a_damaged_event_is_named(
            n in 1usize..6,
            victim in 0usize..6,
            field in prop::sample::select(vec!["uuid", "eventType", "published", "actor", "target"]),
            replacement in prop::option::of(json_value()),
        ) {
            let victim = victim % n;
            let mut events: Vec<Value> = (0..n).map(|i| good_event(&format!("u{i}"))).collect();
            match &replacement {
                Some(v) => events[victim][field] = v.clone(),
                None => { events[victim].as_object_mut().unwrap().remove(field); }
            }
            let body = serde_json::to_vec(&json!({"eventId": "d1", "data": {"events": events}})).unwrap();
            match Delivery::parse(&body) {
                Ok(d) => {
                    prop_assert_eq!(d.events.len(), n);
                    assert_well_formed(&d);
                }
                Err(PayloadError::Event { index, problem }) => {
                    prop_assert_eq!(index, victim);
                    prop_assert!(problem.contains(&format!("`{field}")) || problem.contains("target["), "{}", problem);
                }
                Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
            }
        }

        /// Well-formed events with arbitrary text in every string survive parsing intact.
        #[test]
        fn good_events_round_trip(
            uuids in prop::collection::btree_set("[a-zA-Z0-9-]{1,40}", 1..20),
            login in ".{0,60}",
            name in ".{0,60}",
        ) {
            let events: Vec<Value> = uuids.iter().map(|u| {
                let mut e = good_event(u);
                e["target"][0]["alternateId"] = json!(login);
                e["target"][0]["displayName"] = json!(name);
                e
            }).collect();
            let d = Delivery::parse(&serde_json::to_vec(&json!({"data": {"events": events}})).unwrap()).unwrap();
            prop_assert_eq!(d.events.len(), uuids.len());
            for (e, u) in d.events.iter().zip(&uuids) {
                prop_assert_eq!(&e.uuid, u);
                prop_assert_eq!(e.target("User").and_then(|t| t.alternate_id.as_deref()), Some(login.as_str()));
                prop_assert_eq!(e.subject(), Some("00u1"));
            }
        }
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused_naming_it() {
        let body =
            br#"{"data":{"events":[{"uuid":"a","uuid":"b","eventType":"t","published":"2026-11-28T10:00:00Z"}]}}"#;
        let e = Delivery::parse(body).unwrap_err().to_string();
        assert!(e.contains("duplicate key \"uuid\"") && e.contains("data.events[0]"), "{e}");
        // Even where the first value alone would be a shape error: the repeat is named.
        let body = br#"{"data":{"events":[]},"data":{"events":[]}}"#;
        let e = Delivery::parse(body).unwrap_err().to_string();
        assert!(e.contains("duplicate key \"data\""), "{e}");
        let e = Delivery::parse_delivery_or_event(br#"{"uuid":"a","uuid":"a"}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for depth in [200, 10_000, 500_000] {
            let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let e = Delivery::parse(body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("recursion limit"), "{e}");
            let body = format!("{{\"data\":{{\"events\":[{}{}]}}}}", "{\"a\":".repeat(depth), "}".repeat(depth));
            assert!(Delivery::parse(body.as_bytes()).is_err());
        }
    }

    #[test]
    fn wrong_shapes_get_clear_messages() {
        let cases: [(&str, &str); 8] = [
            ("", "not valid JSON"),
            ("[]", "JSON object"),
            ("{}", "data.events"),
            (r#"{"data":{"events":{}}}"#, "must be an array"),
            (r#"{"data":{"events":[1]}}"#, "must be a JSON object"),
            (r#"{"data":{"events":[{"uuid":5}]}}"#, "`uuid` must be a string"),
            (r#"{"data":{"events":[{"uuid":"a","eventType":"t","published":"yesterday"}]}}"#, "RFC 3339"),
            (
                r#"{"data":{"events":[{"uuid":"a","eventType":"t","published":"2026-11-28T10:00:00Z","target":{}}]}}"#,
                "`target` must be an array",
            ),
        ];
        for (body, want) in cases {
            let e = Delivery::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
