//! The relay loop: a reader thread spools each allowed event from the events socket; the MQTT
//! loop publishes the oldest spooled message (QoS 1), removes it when the broker acknowledges
//! it, and goes on with the next, so messages leave in order, one in flight at a time. A lost
//! broker connection is dropped whole and made again after a back-off: nothing is queued
//! anywhere but the spool, so what was not acknowledged is sent again (at least once).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;

use crate::{Kind, Projection, RelayConfig, RelayError, Spool};

/// An event line longer than this is not an event of the service: skipped.
const MAX_LINE: u64 = 64 * 1024;
/// Wait between attempts to reach the events socket or the broker.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long one poll of the broker connection waits while connected (new spooled messages are
/// picked up at least this often).
const POLL_CONNECTED: Duration = Duration::from_millis(100);
/// While connecting, a poll waits long enough for the connection to be made.
const POLL_CONNECTING: Duration = Duration::from_secs(10);

/// Counters of a relay run (logged at exit).
#[derive(Debug, Default)]
pub struct Stats {
    /// Event lines read from the socket.
    pub received: AtomicU64,
    /// Events spooled for the broker.
    pub spooled: AtomicU64,
    /// Messages the broker acknowledged.
    pub delivered: AtomicU64,
}

/// What a publish in flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Spooled(u64),
    Status,
}

/// The relay: config, spool, counters.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<Stats>,
    /// The reader is connected to the events socket.
    source_up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Opens the spool (creating it), ready to [`Relay::run`].
    pub fn new(config: RelayConfig) -> Result<Self, RelayError> {
        let spool = Spool::open(&config.spool_path, config.spool_max_events)?;
        tracing::info!(
            spooled = spool.len(),
            dropped_before = spool.dropped(),
            spool = %config.spool_path.display(),
            "spool opened"
        );
        Ok(Self {
            config,
            spool: Arc::new(Mutex::new(spool)),
            stats: Arc::default(),
            source_up: Arc::default(),
            stop: Arc::default(),
        })
    }

    /// Set to stop [`Relay::run`] (the signal handler does).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Runs until the stop flag is set: the reader thread, and the broker loop on this thread.
    pub fn run(&self) -> Result<(), RelayError> {
        self.spawn_reader();
        let mut retry = RETRY_MIN;
        while !self.stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            match self.session() {
                Ok(()) => break,
                Err(reason) => {
                    if started.elapsed() > Duration::from_secs(10) {
                        retry = RETRY_MIN;
                    }
                    tracing::warn!(
                        broker = %format!("{}:{}", self.config.mqtt.host, self.config.mqtt.port),
                        error = %reason,
                        spooled = lock(&self.spool).len(),
                        retry_ms = retry.as_millis() as u64,
                        "broker unavailable; events are spooled"
                    );
                    sleep_unless(&self.stop, retry);
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        Ok(())
    }

    fn options(&self) -> MqttOptions {
        let m = &self.config.mqtt;
        let mut o = MqttOptions::new(m.client_id.clone(), m.host.clone(), m.port);
        o.set_keep_alive(m.keep_alive)
            .set_clean_session(true)
            .set_inflight(1)
            .set_last_will(LastWill::new(
                self.config.topics.availability(),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((user, password)) = &m.credentials {
            o.set_credentials(user.clone(), password.clone());
        }
        o
    }

    /// One broker connection, from connect to error (or to stop, which returns `Ok`).
    fn session(&self) -> Result<(), String> {
        let (client, mut conn) = Client::new(self.options(), 16);
        let mut connected = false;
        let mut announced: Option<bool> = None;
        // Publishes handed to the client, in order, until the event loop gives each a packet id.
        let mut requested: VecDeque<Sent> = VecDeque::new();
        let mut by_pkid: HashMap<u16, Sent> = HashMap::new();
        let mut in_flight: Option<u64> = None;
        let mut stopping: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) && stopping.is_none() {
                if !connected {
                    return Ok(());
                }
                // A clean stop says `offline` itself (the broker sends the will only when the
                // connection breaks) and gives the in-flight message a moment.
                let _ = client.try_publish(
                    self.config.topics.availability(),
                    QoS::AtLeastOnce,
                    true,
                    "offline",
                );
                requested.push_back(Sent::Status);
                stopping = Some(Instant::now());
            }
            if let Some(t) = stopping
                && (t.elapsed() > Duration::from_secs(2)
                    || requested.is_empty() && by_pkid.is_empty())
            {
                let _ = client.try_disconnect();
                let _ = conn.recv_timeout(Duration::from_millis(200));
                return Ok(());
            }
            if connected && stopping.is_none() {
                let up = self.source_up.load(Ordering::SeqCst);
                if announced != Some(up) {
                    let state = if up { "online" } else { "offline" };
                    client
                        .try_publish(
                            self.config.topics.availability(),
                            QoS::AtLeastOnce,
                            true,
                            state,
                        )
                        .map_err(|e| e.to_string())?;
                    requested.push_back(Sent::Status);
                    announced = Some(up);
                }
                if in_flight.is_none() {
                    let next = lock(&self.spool).front().map_err(|e| e.to_string())?;
                    if let Some(m) = next {
                        client
                            .try_publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                            .map_err(|e| e.to_string())?;
                        requested.push_back(Sent::Spooled(m.seq));
                        in_flight = Some(m.seq);
                    }
                }
            }
            let wait = if connected {
                POLL_CONNECTED
            } else {
                POLL_CONNECTING
            };
            match conn.recv_timeout(wait) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    connected = true;
                    tracing::info!(
                        broker = %format!("{}:{}", self.config.mqtt.host, self.config.mqtt.port),
                        spooled = lock(&self.spool).len(),
                        "connected to the broker"
                    );
                    if self.config.topics.home_assistant {
                        client
                            .try_publish(
                                self.config.topics.discovery(),
                                QoS::AtLeastOnce,
                                true,
                                self.discovery(),
                            )
                            .map_err(|e| e.to_string())?;
                        requested.push_back(Sent::Status);
                    }
                }
                Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(what) = requested.pop_front() {
                        by_pkid.insert(pkid, what);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    if let Some(Sent::Spooled(seq)) = by_pkid.remove(&ack.pkid) {
                        lock(&self.spool).remove(seq).map_err(|e| e.to_string())?;
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        if in_flight == Some(seq) {
                            in_flight = None;
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(rumqttc::RecvTimeoutError::Timeout) => {
                    if !connected {
                        return Err("no answer from the broker".into());
                    }
                }
                Err(rumqttc::RecvTimeoutError::Disconnected) => return Err("client closed".into()),
            }
        }
    }

    /// Home Assistant's discovery config for a "last decision" sensor of this terminal.
    fn discovery(&self) -> String {
        let t = &self.config.topics;
        let id = format!("{}_{}", t.prefix, t.terminal);
        json!({
            "name": "Last decision",
            "unique_id": format!("{id}_last_decision"),
            "state_topic": t.events(),
            "value_template": "{{ value_json.outcome }}",
            "availability_topic": t.availability(),
            "icon": "mdi:face-recognition",
            "device": {
                "identifiers": [id],
                "name": format!("facegate {}", t.terminal),
                "manufacturer": "facegate",
            },
        })
        .to_string()
    }

    fn spawn_reader(&self) {
        let path = self.config.events_socket.clone();
        let projection = Projection::new(
            self.config.decision_fields.clone(),
            self.config.alert_fields.clone(),
        );
        let (events, alerts) = (self.config.topics.events(), self.config.topics.alerts());
        let spool = self.spool.clone();
        let stats = self.stats.clone();
        let up = self.source_up.clone();
        let stop = self.stop.clone();
        let reader = move || {
            let mut retry = RETRY_MIN;
            let mut warned = false;
            while !stop.load(Ordering::SeqCst) {
                let stream = match UnixStream::connect(&path) {
                    Ok(s) => s,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(socket = %path.display(), error = %e, "events socket unavailable; retrying");
                            warned = true;
                        }
                        sleep_unless(&stop, retry);
                        retry = (retry * 2).min(RETRY_MAX);
                        continue;
                    }
                };
                tracing::info!(socket = %path.display(), "reading the gate's events");
                up.store(true, Ordering::SeqCst);
                (retry, warned) = (RETRY_MIN, false);
                let mut lines = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    line.clear();
                    match (&mut lines).take(MAX_LINE).read_line(&mut line) {
                        Ok(0) => break,
                        Ok(_) if !line.ends_with('\n') => {
                            tracing::warn!("over-long event line skipped");
                            // Discard the rest of the line.
                            let mut rest = Vec::new();
                            if lines.read_until(b'\n', &mut rest).is_err() {
                                break;
                            }
                        }
                        Ok(_) => {
                            stats.received.fetch_add(1, Ordering::Relaxed);
                            let Some((kind, payload)) = projection.project(line.trim_end()) else {
                                continue;
                            };
                            let topic = match kind {
                                Kind::Decision => &events,
                                Kind::Alert => &alerts,
                            };
                            match lock(&spool).push(topic, &payload) {
                                Ok(_) => {
                                    stats.spooled.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    tracing::error!(error = %crate::error::chain(&e), "event could not be spooled")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "events socket read failed");
                            break;
                        }
                    }
                }
                up.store(false, Ordering::SeqCst);
                tracing::warn!(socket = %path.display(), "the gate closed the events socket; reconnecting");
                sleep_unless(&stop, retry);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("events".into())
            .spawn(reader)
        {
            tracing::error!(error = %e, "could not start the events reader");
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}
