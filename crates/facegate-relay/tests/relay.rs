//! `facegate-relay` as a real process between the engine's real events socket
//! (`facegate_engine::SocketBroadcaster`, as `facegate run` binds it) and a real MQTT broker
//! (Debian's `mosquitto`, installed by `deploy/dev.sh setup`, started here on a free loopback
//! port with its own config in a temporary directory). A subscriber (rumqttc) sees what a
//! site's Home Assistant or Node-RED would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facegate_engine::{
    AlertEvent, DecisionEvent, EventSink, Method, Mode, Outcome, PromptEvent, SocketBroadcaster,
    StageLatency, rfc3339,
};
use facegate_types::{SubjectId, UnixMillis};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run `deploy/dev.sh setup` (Debian package mosquitto)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto on 127.0.0.1:`port`, persistent in `dir` (so a subscriber's session and its
/// queued messages survive a broker restart, as on a real site broker).
struct Broker {
    child: Child,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nlog_dest stderr\n{}",
                dir.display(),
                // Started as root, mosquitto changes to user mosquitto, which cannot write the
                // test's private directory: stay root there.
                if unsafe { geteuid() } == 0 {
                    "user root\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }

    /// SIGTERM: mosquitto saves its persistence file and exits.
    fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc_kill(child.id() as i32, 15);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "child did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

/// A subscriber to `facegate/#` with a persistent session (`clean_session = false`): what it
/// received, in order, as (topic, payload, retained).
#[derive(Clone)]
struct Subscriber {
    got: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl Subscriber {
    fn start(port: u16, id: &str) -> Self {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(o, 16);
        client.subscribe("facegate/#", QoS::AtLeastOnce).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let _client = client;
            loop {
                match conn.recv() {
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => g.lock().unwrap().push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        p.retain,
                    )),
                    Ok(Ok(_)) => {}
                    // The broker is away: try again (the session is resumed on reconnect).
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    Err(_) => break,
                }
            }
        });
        Self { got }
    }

    fn on(&self, topic: &str) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| serde_json::from_str(p).unwrap())
            .collect()
    }

    fn last_raw(&self, topic: &str) -> Option<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p.clone())
    }

    fn wait(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {:?}",
                self.got.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn decision(track: u64) -> DecisionEvent {
    DecisionEvent {
        time: rfc3339(UnixMillis(1_700_000_000_000 + track as i64)),
        unix_ms: 1_700_000_000_000 + track as i64,
        track: Some(track),
        outcome: Outcome::Granted,
        subject: Some(SubjectId::new("emp-7").unwrap()),
        method: Method::Face,
        mode: Mode::Identification,
        score: Some(0.61),
        frames: 3,
        reason: None,
        latency_ms: StageLatency::default(),
    }
}

/// The relay process, killed if a test fails before it stops it.
struct RelayProc(Child);

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Site {
    dir: tempfile::TempDir,
    port: u16,
    events: SocketBroadcaster,
}

impl Site {
    fn new(decision_fields: &str, max_events: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let sock = dir.path().join("events.sock");
        let events = SocketBroadcaster::bind(&sock).unwrap();
        std::fs::write(
            dir.path().join("relay.toml"),
            format!(
                "[source]\nevents_socket = \"events.sock\"\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"relay-test\"\nkeep_alive_s = 5\n\
                 [topics]\nprefix = \"facegate\"\nterminal = \"gate-1\"\nhome_assistant = true\n\
                 [publish]\ndecision_fields = [{decision_fields}]\nalert_fields = [\"alert\"]\n\
                 [spool]\npath = \"spool\"\nmax_events = {max_events}\n"
            ),
        )
        .unwrap();
        Self { dir, port, events }
    }

    fn relay(&mut self) -> RelayProc {
        // An empty line (skipped by readers) drops subscribers that are gone, such as a killed
        // relay, so the count below is of live ones.
        self.events.broadcast(b"\n");
        let before = self.events.subscribers();
        let child = Command::new(env!("CARGO_BIN_EXE_facegate-relay"))
            .args(["run", "--config"])
            .arg(self.dir.path().join("relay.toml"))
            .env("FACEGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The relay subscribes to the events socket (accepted at the next event or accept).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.events.accept_pending();
            if self.events.subscribers() > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not connect to the events socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RelayProc(child)
    }

    fn spool_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("spool"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".msg")
            })
            .count()
    }

    fn wait_until(&self, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_spooled(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.spool_files() != n {
            assert!(
                Instant::now() < deadline,
                "spool holds {} messages, expected {n}",
                self.spool_files()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn only_allow_listed_fields_are_published_with_availability_and_discovery() {
    let mut site = Site::new("\"time\", \"outcome\", \"method\", \"frames\"", 100);
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(broker_dir.path(), site.port);
    let sub = Subscriber::start(site.port, "sub-fields");
    let mut relay = site.relay();
    sub.wait("online", |s| {
        s.last_raw("facegate/gate-1/availability").as_deref() == Some("online")
    });

    for t in 1..=3 {
        site.events.emit(&decision(t)).unwrap();
    }
    // A challenge prompt (for the terminal's screen) is not relayed.
    site.events
        .prompt(&PromptEvent {
            time: rfc3339(UnixMillis(1_700_000_000_000)),
            unix_ms: 1_700_000_000_000,
            track: 9,
            prompt: "blink",
            text: "Blink",
            step: 1,
            steps: 3,
            respond_within_ms: 2500,
        })
        .unwrap();
    site.events
        .alert(&AlertEvent {
            time: rfc3339(UnixMillis(1_700_000_000_000)),
            unix_ms: 1_700_000_000_000,
            alert: "clock_set_back",
            detail: "the clock is 5.0 s earlier than the newest audit record".into(),
        })
        .unwrap();
    sub.wait("3 decisions and the alert", |s| {
        s.on("facegate/gate-1/events").len() == 3 && s.on("facegate/gate-1/alerts").len() == 1
    });
    let decisions = sub.on("facegate/gate-1/events");
    for d in &decisions {
        let keys: BTreeSet<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["frames", "method", "outcome", "time"]),
            "{d}"
        );
        assert_eq!(d["outcome"], "granted");
    }
    assert_eq!(decisions[2]["time"], rfc3339(UnixMillis(1_700_000_000_003)));
    assert_eq!(
        sub.on("facegate/gate-1/alerts"),
        [serde_json::json!({"alert": "clock_set_back"})]
    );
    let all = sub.got.lock().unwrap().clone();
    assert!(
        all.iter()
            .all(|(_, p, _)| !p.contains("emp-7") && !p.contains("0.61"))
    );
    assert!(all.iter().all(|(t, _, _)| !t.contains("prompt")));
    // Home Assistant discovery: a retained sensor config on its own prefix (not under
    // facegate/#, so read it with a second subscription).
    let mut o = MqttOptions::new("sub-ha", "127.0.0.1", site.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 4);
    client
        .subscribe(
            "homeassistant/sensor/facegate_gate-1/last_decision/config",
            QoS::AtLeastOnce,
        )
        .unwrap();
    let config = loop {
        match conn.recv_timeout(Duration::from_secs(10)).unwrap() {
            Ok(Event::Incoming(Packet::Publish(p))) => break p,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert!(config.retain);
    let c: serde_json::Value = serde_json::from_slice(&config.payload).unwrap();
    assert_eq!(c["state_topic"], "facegate/gate-1/events");
    assert_eq!(c["availability_topic"], "facegate/gate-1/availability");

    // A clean stop says offline (retained).
    terminate(&mut relay.0);
    sub.wait("offline", |s| {
        s.last_raw("facegate/gate-1/availability").as_deref() == Some("offline")
    });
    assert_eq!(site.spool_files(), 0);
    broker.stop();
}

#[test]
fn broker_away_events_spooled_bounded_kept_across_restart_and_delivered_in_order() {
    let mut site = Site::new("\"track\", \"outcome\"", 4);
    let broker_dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(broker_dir.path(), site.port);
    let sub = Subscriber::start(site.port, "sub-spool");
    let mut relay = site.relay();
    site.events.emit(&decision(1)).unwrap();
    sub.wait("event 1", |s| s.on("facegate/gate-1/events").len() == 1);

    // The broker goes away: events are spooled, at most 4, the oldest dropped and counted.
    broker.stop();
    for t in 2..=7 {
        site.events.emit(&decision(t)).unwrap();
    }
    let dropped_file = site.dir.path().join("spool/dropped");
    let dropped = || std::fs::read_to_string(&dropped_file).unwrap_or_default();
    site.wait_until("2 dropped", || dropped() == "2");
    site.wait_spooled(4);

    // The relay dies (kill -9) and comes back: the spool is still there, and the bound and
    // the count hold across the restart.
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    let mut relay = site.relay();
    site.events.emit(&decision(8)).unwrap();
    site.wait_until("3 dropped", || dropped() == "3");
    site.wait_spooled(4);

    // The broker is back (same port, same persistence: the subscriber's session resumes):
    // the spool is flushed in order and emptied.
    let broker = Broker::start(broker_dir.path(), site.port);
    sub.wait("events 5 to 8", |s| {
        s.on("facegate/gate-1/events").len() == 5
    });
    let tracks: Vec<u64> = sub
        .on("facegate/gate-1/events")
        .iter()
        .map(|d| d["track"].as_u64().unwrap())
        .collect();
    assert_eq!(tracks, [1, 5, 6, 7, 8]);
    site.wait_spooled(0);
    // Live events flow again after the flush.
    site.events.emit(&decision(9)).unwrap();
    sub.wait("event 9", |s| s.on("facegate/gate-1/events").len() == 6);
    terminate(&mut relay.0);
    broker.stop();
}

#[test]
fn the_allow_list_names_every_field_the_engine_serialises() {
    let v: serde_json::Value = serde_json::from_str(&decision(1).to_json_line()).unwrap();
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, facegate_relay::DECISION_FIELDS.into_iter().collect());
    let a = AlertEvent {
        time: String::new(),
        unix_ms: 0,
        alert: "clock_set_back",
        detail: String::new(),
    };
    let v: serde_json::Value = serde_json::from_str(&a.to_json_line()).unwrap();
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, facegate_relay::ALERT_FIELDS.into_iter().collect());
}

#[test]
fn the_gate_binary_links_no_network_stack() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "facegate",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.lines().any(|l| l.starts_with("facegate-engine ")),
        "{tree}"
    );
    for banned in ["tokio ", "rumqttc ", "facegate-relay "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "the gate binary depends on {banned}"
        );
    }
}
