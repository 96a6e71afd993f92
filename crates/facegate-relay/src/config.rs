//! The relay's own config file (TOML): parsed into raw structs that refuse unknown keys, then
//! validated into [`RelayConfig`], the only type the rest of the relay sees.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::RelayError;

/// Every field of a decision event (`facegate_engine::DecisionEvent`'s JSON line); a test
/// compares this list with the engine's serialisation, so a new field needs a decision here.
pub const DECISION_FIELDS: [&str; 11] = [
    "time",
    "unix_ms",
    "track",
    "outcome",
    "subject",
    "method",
    "mode",
    "score",
    "frames",
    "reason",
    "latency_ms",
];

/// Every field of an alert event (`facegate_engine::AlertEvent`).
pub const ALERT_FIELDS: [&str; 4] = ["time", "unix_ms", "alert", "detail"];

/// The spool's bound may not exceed this many events.
pub const MAX_SPOOL_EVENTS: usize = 1_000_000;

/// What is published by default: when and what happened, never who (add `subject` on purpose).
const DEFAULT_DECISION_FIELDS: [&str; 6] =
    ["time", "outcome", "method", "mode", "frames", "reason"];
const DEFAULT_ALERT_FIELDS: [&str; 3] = ["time", "alert", "detail"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    mqtt: RawMqtt,
    topics: RawTopics,
    #[serde(default)]
    publish: RawPublish,
    spool: RawSpool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    events_socket: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    host: String,
    #[serde(default = "default_port")]
    port: u32,
    client_id: String,
    #[serde(default = "default_keep_alive")]
    keep_alive_s: u64,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

fn default_port() -> u32 {
    1883
}

fn default_keep_alive() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopics {
    #[serde(default = "default_prefix")]
    prefix: String,
    terminal: String,
    #[serde(default)]
    home_assistant: bool,
    #[serde(default = "default_discovery")]
    discovery_prefix: String,
}

fn default_prefix() -> String {
    "facegate".into()
}

fn default_discovery() -> String {
    "homeassistant".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    decision_fields: Vec<String>,
    alert_fields: Vec<String>,
}

impl Default for RawPublish {
    fn default() -> Self {
        Self {
            decision_fields: DEFAULT_DECISION_FIELDS.map(String::from).to_vec(),
            alert_fields: DEFAULT_ALERT_FIELDS.map(String::from).to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    path: PathBuf,
    #[serde(default = "default_max_events")]
    max_events: usize,
}

fn default_max_events() -> usize {
    10_000
}

/// The broker and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// User name and password (read from `password_file` at start; never in the config).
    pub credentials: Option<(String, String)>,
}

/// The topics, in the style of Frigate (`frigate/events`, `frigate/available`) with the
/// terminal's name as one level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
    pub terminal: String,
    pub home_assistant: bool,
    pub discovery_prefix: String,
}

impl Topics {
    /// `<prefix>/<terminal>/events`: decision events.
    pub fn events(&self) -> String {
        format!("{}/{}/events", self.prefix, self.terminal)
    }

    /// `<prefix>/<terminal>/alerts`: alerts (broken audit chain, clock set back, filing).
    pub fn alerts(&self) -> String {
        format!("{}/{}/alerts", self.prefix, self.terminal)
    }

    /// `<prefix>/<terminal>/availability`: `online` while the relay reads the gate's events,
    /// `offline` otherwise (retained; the broker publishes it as the relay's last will).
    pub fn availability(&self) -> String {
        format!("{}/{}/availability", self.prefix, self.terminal)
    }

    /// Home Assistant's MQTT discovery topic for the terminal's last-decision sensor.
    pub fn discovery(&self) -> String {
        format!(
            "{}/sensor/{}_{}/last_decision/config",
            self.discovery_prefix, self.prefix, self.terminal
        )
    }
}

/// The validated relay config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub events_socket: PathBuf,
    pub mqtt: MqttSettings,
    pub topics: Topics,
    /// Decision fields published, in the order given.
    pub decision_fields: Vec<String>,
    /// Alert fields published, in the order given.
    pub alert_fields: Vec<String>,
    pub spool_path: PathBuf,
    pub spool_max_events: usize,
}

/// A topic level: printable ASCII without the MQTT wildcards and separators.
fn topic_level(key: &str, value: &str, slash_ok: bool) -> Result<(), RelayError> {
    if value.is_empty() || value.len() > 64 {
        return Err(RelayError::setting(key, "must have 1 to 64 characters"));
    }
    if value.starts_with('$') {
        return Err(RelayError::setting(
            key,
            "must not start with `$` (broker topics)",
        ));
    }
    if let Some(c) = value.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (slash_ok && c == '/'))
    }) {
        return Err(RelayError::setting(
            key,
            format!("= {value:?}: character {c:?} is not allowed (letters, digits, `-`, `_`, `.`)"),
        ));
    }
    if slash_ok && (value.starts_with('/') || value.ends_with('/') || value.contains("//")) {
        return Err(RelayError::setting(
            key,
            format!("= {value:?}: empty topic level"),
        ));
    }
    Ok(())
}

fn fields(key: &str, given: &[String], known: &[&str]) -> Result<Vec<String>, RelayError> {
    if given.is_empty() {
        return Err(RelayError::setting(
            key,
            "is empty: name at least one field to publish",
        ));
    }
    let mut seen = BTreeSet::new();
    for f in given {
        if !known.contains(&f.as_str()) {
            return Err(RelayError::setting(
                key,
                format!(
                    "names {f:?}, which events do not have; the fields are {}",
                    known.join(", ")
                ),
            ));
        }
        if !seen.insert(f.as_str()) {
            return Err(RelayError::setting(key, format!("names {f:?} twice")));
        }
    }
    Ok(given.to_vec())
}

impl RelayConfig {
    /// Reads and validates `path`; relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|source| RelayError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            RelayError::ConfigParse { reason, .. } => RelayError::ConfigParse {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates `text`; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, RelayError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| RelayError::ConfigParse {
            path: PathBuf::new(),
            reason: e.message().to_owned(),
        })?;
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let m = raw.mqtt;
        if m.host.trim().is_empty() || m.host.len() > 253 || m.host.contains(char::is_whitespace) {
            return Err(RelayError::setting(
                "mqtt.host",
                "must be a host name or address",
            ));
        }
        let port = u16::try_from(m.port)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                RelayError::setting("mqtt.port", format!("= {} must lie in 1..=65535", m.port))
            })?;
        topic_level("mqtt.client_id", &m.client_id, false)?;
        if !(5..=3600).contains(&m.keep_alive_s) {
            return Err(RelayError::setting(
                "mqtt.keep_alive_s",
                format!("= {} must lie in 5..=3600", m.keep_alive_s),
            ));
        }
        let credentials = match (m.username, m.password_file) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(RelayError::setting(
                    "mqtt.password_file",
                    "is set without mqtt.username",
                ));
            }
            (Some(u), None) => Some((u, String::new())),
            (Some(u), Some(file)) => {
                let file = resolve(&file);
                let pw = std::fs::read_to_string(&file)
                    .map_err(|source| RelayError::PasswordFile { path: file, source })?;
                Some((u, pw.trim_end_matches(['\r', '\n']).to_owned()))
            }
        };
        let t = raw.topics;
        topic_level("topics.prefix", &t.prefix, true)?;
        topic_level("topics.terminal", &t.terminal, false)?;
        topic_level("topics.discovery_prefix", &t.discovery_prefix, true)?;
        let decision_fields = fields(
            "publish.decision_fields",
            &raw.publish.decision_fields,
            &DECISION_FIELDS,
        )?;
        let alert_fields = fields(
            "publish.alert_fields",
            &raw.publish.alert_fields,
            &ALERT_FIELDS,
        )?;
        if t.home_assistant && !decision_fields.iter().any(|f| f == "outcome") {
            return Err(RelayError::setting(
                "topics.home_assistant",
                "= true needs \"outcome\" in publish.decision_fields (the sensor's state)",
            ));
        }
        if !(1..=MAX_SPOOL_EVENTS).contains(&raw.spool.max_events) {
            return Err(RelayError::setting(
                "spool.max_events",
                format!(
                    "= {} must lie in 1..={MAX_SPOOL_EVENTS} (the spool is always bounded)",
                    raw.spool.max_events
                ),
            ));
        }
        Ok(Self {
            events_socket: resolve(&raw.source.events_socket),
            mqtt: MqttSettings {
                host: m.host,
                port,
                client_id: m.client_id,
                keep_alive: Duration::from_secs(m.keep_alive_s),
                credentials,
            },
            topics: Topics {
                prefix: t.prefix,
                terminal: t.terminal,
                home_assistant: t.home_assistant,
                discovery_prefix: t.discovery_prefix,
            },
            decision_fields,
            alert_fields,
            spool_path: resolve(&raw.spool.path),
            spool_max_events: raw.spool.max_events,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../configs/facegate-relay.toml");

    fn parse(text: &str) -> Result<RelayConfig, RelayError> {
        RelayConfig::parse(text, Path::new("/etc/facegate-relay"))
    }

    #[test]
    fn the_shipped_example_validates() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.topics.events(), "facegate/gate-1/events");
        assert_eq!(c.topics.availability(), "facegate/gate-1/availability");
        assert!(!c.decision_fields.iter().any(|f| f == "subject"));
        assert_eq!(c.spool_path, Path::new("/var/lib/facegate-relay/spool"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let err = |from: &str, to: &str| {
            assert!(EXAMPLE.contains(from), "{from}");
            parse(&EXAMPLE.replace(from, to)).unwrap_err().to_string()
        };
        let e = err("\"outcome\",", "\"outcome\", \"embedding\",");
        assert!(
            e.contains("publish.decision_fields names \"embedding\", which events do not have"),
            "{e}"
        );
        let e = err("\"outcome\",", "\"outcome\", \"landmarks\",");
        assert!(e.contains("\"landmarks\""), "{e}");
        let e = err("\"outcome\",", "\"outcome\", \"outcome\",");
        assert!(e.contains("twice"), "{e}");
        let e = err("port = 1883", "port = 70000");
        assert!(e.contains("mqtt.port = 70000 must lie in 1..=65535"), "{e}");
        let e = err("terminal = \"gate-1\"", "terminal = \"gate/1\"");
        assert!(e.contains("topics.terminal"), "{e}");
        let e = err("terminal = \"gate-1\"", "terminal = \"#\"");
        assert!(e.contains("topics.terminal"), "{e}");
        let e = err("max_events = 10000", "max_events = 0");
        assert!(e.contains("spool.max_events = 0"), "{e}");
        let e = err("[spool]", "[spool]\nunbounded = true");
        assert!(e.contains("unknown field `unbounded`"), "{e}");
        let e = err("client_id = \"facegate-relay-gate-1\"", "client_id = \"\"");
        assert!(e.contains("mqtt.client_id"), "{e}");
        let e = err(
            "[mqtt]",
            "[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"",
        );
        assert!(
            e.contains("mqtt.password_file /nonexistent/pw: cannot be read"),
            "{e}"
        );
    }
}
