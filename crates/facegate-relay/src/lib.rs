//! The site relay of facegate: a separate process (`facegate-relay`, its own system user) that
//! subscribes to the gate service's events socket and publishes an allow-listed subset of the
//! fields of decision and alert events to an MQTT broker, with topics in the style Frigate and
//! Home Assistant users know (`facegate/<terminal>/events`, `.../alerts`, `.../availability`
//! with a last will, optional Home Assistant discovery). While the broker is away, events wait
//! in a bounded on-disk spool ([`Spool`]: oldest dropped first and counted, kept across a
//! restart, flushed in order).
//!
//! It must never see or send face data: it reads only the events socket (events carry ids,
//! outcomes, scores and latencies, never an image, a landmark or an embedding), and of those it
//! forwards only the fields the operator allowed ([`Projection`]: names checked against the
//! event types' known fields, so a typo or a field that does not exist is refused at start).
//! It never opens the store, never reads the key, and the gate service never links it: the
//! gate process stays without network (its egress guard is untouched; `deny.toml` lets only
//! this crate depend on the MQTT client and its async runtime).

mod config;
mod error;
mod filter;
mod relay;
mod spool;

pub use config::{
    ALERT_FIELDS, DECISION_FIELDS, MAX_SPOOL_EVENTS, MqttSettings, RelayConfig, Topics,
};
pub use error::RelayError;
pub use filter::{Kind, Projection};
pub use relay::{Relay, Stats};
pub use spool::{Spool, SpooledMessage};
