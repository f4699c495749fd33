//! Finds a JSON object that repeats a key.
//!
//! serde_json keeps the last of two equal keys without a word, so `{"uuid":"a","uuid":"b"}`
//! would mean "b" to hookhost and possibly "a" to whatever logged or checked the body
//! before it (a proxy, a WAF, an audit trail). A body that two readers can understand
//! differently is refused instead: one pass over the text, keeping the keys of each open
//! object, stopping at the first repeat. Keys are compared after unescaping, so `"a"` and
//! `"\u0061"` are the same key, as they are to every JSON reader.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// The first repeated key of `body`, as `(key, where)`, `where` being a path like
/// `data.events[0]` (`$` for the top level). `None` when no object repeats a key.
///
/// Call it on a body that already parsed: a syntax error here is reported as "no
/// duplicate" (the parser's own error is the one worth showing).
pub fn first_duplicate(body: &[u8]) -> Option<(String, String)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut found = None;
    let _ = Walk { path: String::new(), found: &mut found }.deserialize(&mut de);
    found
}

/// One value of the document at `path`; records a duplicate in `found` and stops.
struct Walk<'a> {
    path: String,
    found: &'a mut Option<(String, String)>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let path = format!("{}[{index}]", self.path_or_root());
            let found = &mut *self.found;
            if seq.next_element_seed(Walk { path, found })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key.clone()) {
                *self.found = Some((key, self.path_or_root()));
                // Stop here; the message is in `found`, not in this error.
                return Err(A::Error::custom("duplicate key"));
            }
            map.next_value_seed(Walk { path, found: &mut *self.found })?;
        }
        Ok(())
    }
}

impl Walk<'_> {
    fn path_or_root(&self) -> String {
        if self.path.is_empty() {
            "$".into()
        } else {
            self.path.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_duplicate;

    #[test]
    fn finds_a_repeat_at_any_depth_and_names_where() {
        assert_eq!(first_duplicate(br#"{"a":1,"a":2}"#), Some(("a".into(), "$".into())));
        assert_eq!(
            first_duplicate(br#"{"data":{"events":[{"uuid":"x"},{"uuid":"y","uuid":"z"}]}}"#),
            Some(("uuid".into(), "data.events[1]".into()))
        );
        assert_eq!(first_duplicate(br#"[[{"k":1,"k":1}]]"#), Some(("k".into(), "$[0][0]".into())));
        // The same key after unescaping.
        assert_eq!(first_duplicate(br#"{"a":1,"\u0061":2}"#), Some(("a".into(), "$".into())));
    }

    #[test]
    fn equal_keys_in_different_objects_are_fine() {
        assert_eq!(first_duplicate(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#), None);
        assert_eq!(first_duplicate(br#"{"a":1,"A":2,"a ":3}"#), None);
        assert_eq!(first_duplicate(b"[1,2,3]"), None);
        assert_eq!(first_duplicate(b"\"x\""), None);
    }
}
