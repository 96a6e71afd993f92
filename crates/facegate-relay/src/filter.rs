//! Which events go out and with which fields.

use serde_json::{Map, Value};

/// What an event line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A decision (`outcome` field).
    Decision,
    /// An alert (`alert` field).
    Alert,
}

/// The allow-lists: an event line in, the allowed fields of a decision or an alert out.
#[derive(Debug, Clone)]
pub struct Projection {
    decision: Vec<String>,
    alert: Vec<String>,
}

impl Projection {
    /// From the validated config's lists ([`crate::RelayConfig`]).
    pub fn new(decision: Vec<String>, alert: Vec<String>) -> Self {
        Self { decision, alert }
    }

    /// The event's kind and its allowed fields as a JSON object (keys sorted),
    /// or `None` for anything that is not a decision or an alert: challenge prompts (they are
    /// for the terminal's screen), lines that are not JSON objects. A field the event lacks is
    /// left out; nothing that is not on the list is ever copied.
    pub fn project(&self, line: &str) -> Option<(Kind, String)> {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
            return None;
        };
        let (kind, allowed) = if event.contains_key("prompt") {
            return None;
        } else if event.contains_key("alert") {
            (Kind::Alert, &self.alert)
        } else if event.contains_key("outcome") {
            (Kind::Decision, &self.decision)
        } else {
            return None;
        };
        let mut out = Map::new();
        for f in allowed {
            if let Some(v) = event.get(f) {
                out.insert(f.clone(), v.clone());
            }
        }
        Some((kind, Value::Object(out).to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_fields_pass_and_prompts_and_junk_do_not() {
        let p = Projection::new(vec!["outcome".into(), "time".into()], vec!["alert".into()]);
        let line = r#"{"time":"t","outcome":"granted","subject":"emp-1","score":0.7,"latency_ms":{"detect":1.0}}"#;
        let (kind, out) = p.project(line).unwrap();
        assert_eq!(kind, Kind::Decision);
        assert_eq!(out, r#"{"outcome":"granted","time":"t"}"#);
        let (kind, out) = p
            .project(r#"{"alert":"clock_set_back","detail":"x"}"#)
            .unwrap();
        assert_eq!(
            (kind, out.as_str()),
            (Kind::Alert, r#"{"alert":"clock_set_back"}"#)
        );
        assert!(p.project(r#"{"prompt":"blink","track":1}"#).is_none());
        assert!(p.project("not json").is_none());
        assert!(p.project("[1,2]").is_none());
        assert!(p.project(r#"{"embedding":[0.1]}"#).is_none());
    }
}
