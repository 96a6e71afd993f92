//! The panel outputs against real peers: facegate's OSDP reader (Peripheral Device) and
//! LibOSDP's own Control Panel, on the two ends of a pseudo-terminal pair made by `socat`
//! (installed by `deploy/dev.sh setup`), with decisions made by the real engine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facegate_engine::{
    AlertEvent, CardNumber, Credential, CredentialKind, Engine, EventSink, GateOutput, MemorySink,
    Method, OsdpGate, OsdpReader, OsdpSecurity, OsdpSettings, OsdpSink, Outcome, Pulse, Scbk,
    SerialChannel, WiegandBits, WiegandCard, WiegandFormat,
};
use facegate_types::SubjectId;
use libosdp::{
    ControlPanel, ControlPanelBuilder, OsdpCardFormats, OsdpEvent, OsdpFlag, OsdpStatusReportType,
    PdInfoBuilder,
};

use super::{engine_config, grey_opener, open_store, pipeline, policy};

const KEY: [u8; 16] = *b"facegate-test-k1";
const OTHER_KEY: [u8; 16] = *b"some-other-key-2";
const ADDRESS: u8 = 101;
const BAUD: u32 = 115200;
const VENDOR: [u8; 3] = [0x0A, 0x0B, 0x0C];

/// Two linked pseudo-terminals from socat, killed on drop.
struct PtyPair {
    child: Child,
    pd: PathBuf,
    cp: PathBuf,
}

impl PtyPair {
    fn new(dir: &Path) -> Self {
        let (pd, cp) = (dir.join("pd"), dir.join("cp"));
        let mut child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", pd.display()))
            .arg(format!("pty,raw,echo=0,link={}", cp.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("socat ({e}): run deploy/dev.sh setup, which installs it"));
        let started = Instant::now();
        while !(pd.exists() && cp.exists()) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "socat made no ptys"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("socat exited with {status} before making the ptys");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, pd, cp }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// LibOSDP's Control Panel on the other pty, refreshed on its own thread; every event it
/// receives from the PD goes to `events`.
struct Panel {
    cp: Arc<Mutex<ControlPanel>>,
    stop: Arc<AtomicBool>,
    events: Receiver<OsdpEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Panel {
    fn start(tty: &Path, key: [u8; 16]) -> Self {
        Self::start_with(tty, key, OsdpFlag::EnforceSecure)
    }

    fn start_with(tty: &Path, key: [u8; 16], flags: OsdpFlag) -> Self {
        let channel = SerialChannel::open(tty, BAUD).unwrap();
        let pd = PdInfoBuilder::new()
            .name("facegate terminal")
            .unwrap()
            .address(i32::from(ADDRESS))
            .unwrap()
            .baud_rate(BAUD as i32)
            .unwrap()
            .flag(flags)
            .secure_channel_key(key);
        let mut cp = ControlPanelBuilder::new()
            .add_channel(Box::new(channel), vec![pd])
            .build()
            .unwrap();
        let (tx, events) = channel_pair();
        cp.set_event_callback(move |_pd, event| {
            let _ = tx.send(event);
            0
        });
        let cp = Arc::new(Mutex::new(cp));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&cp), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                c.lock().unwrap().refresh();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            cp,
            stop,
            events,
            thread: Some(thread),
        }
    }

    fn secure(&self) -> bool {
        self.cp.lock().unwrap().is_sc_active(0)
    }

    fn next_event(&self, within: Duration) -> Option<OsdpEvent> {
        self.events.recv_timeout(within).ok()
    }
}

fn channel_pair() -> (std::sync::mpsc::Sender<OsdpEvent>, Receiver<OsdpEvent>) {
    channel()
}

impl Drop for Panel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn settings(tty: &Path, key: [u8; 16]) -> OsdpSettings {
    OsdpSettings {
        device: tty.to_path_buf(),
        baud: BAUD,
        address: ADDRESS,
        security: OsdpSecurity::Secure {
            scbk: Some(Scbk::new(key)),
            install_mode: false,
            key_file: None,
        },
        format: WiegandFormat::W26,
        facility: 1,
        vendor_code: VENDOR,
    }
}

fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{what} after {:?}", started.elapsed());
}

#[test]
fn a_grant_reaches_the_panel_as_the_subjects_card_read_over_the_secure_channel() {
    let mut p = pipeline();
    let policy = policy();
    let dir = tempfile::tempdir().unwrap();
    let ptys = PtyPair::new(dir.path());
    let reader = OsdpReader::start(&settings(&ptys.pd, KEY)).unwrap();
    let panel = Panel::start(&ptys.cp, KEY);
    let (gate, sink): (OsdpGate, OsdpSink) = reader.split();
    wait_until(
        Duration::from_secs(20),
        "secure channel on both sides",
        || gate.is_secure() && panel.secure(),
    );

    // alice holds card 12345 and a PIN; the PIN is presented and granted by the engine.
    let store_dir = dir.path().join("state");
    std::fs::create_dir(&store_dir).unwrap();
    let mut store = open_store(&store_dir, &policy);
    let alice = SubjectId::new("alice").unwrap();
    store
        .issue_credential(&alice, CredentialKind::Card, "12345", "badge", "op-1")
        .unwrap();
    store
        .issue_credential(&alice, CredentialKind::Pin, "2580", "", "op-1")
        .unwrap();
    let events = MemorySink::new();
    let mut engine = Engine::new(engine_config(&p, &policy), &mut *p, store)
        .unwrap()
        .with_source_opener(grey_opener())
        .with_gate(Box::new(gate))
        .with_sink(Box::new(sink))
        .with_sink(Box::new(events.clone()));
    let handle = engine.handle();
    handle.submit(Credential::Pin("2580".into())).unwrap();
    handle.submit(Credential::Pin("9999".into())).unwrap();
    let summary = engine.run().unwrap();
    let decided: Vec<_> = events
        .events()
        .iter()
        .map(|e| (e.outcome, e.subject.clone()))
        .collect();
    assert_eq!(
        decided,
        [(Outcome::Granted, Some(alice)), (Outcome::Unknown, None)]
    );
    assert_eq!(summary.gate_pulses, 1);

    let card = panel.next_event(Duration::from_secs(5)).unwrap_or_else(|| {
        let logs = super::logs();
        let gate: Vec<_> = logs
            .lines()
            .filter(|l| l.contains("gate") || l.contains("OSDP"))
            .collect();
        panic!("no card read reached the panel; the gate's log: {gate:#?}")
    });
    let OsdpEvent::CardRead(read) = card else {
        panic!("expected a card read, got {card:?}");
    };
    assert_eq!(read.format, OsdpCardFormats::Wiegand);
    assert_eq!(read.nr_bits, 26);
    let bits = WiegandBits::from_bytes(&read.data, read.nr_bits).unwrap();
    assert_eq!(bits.to_bit_string(), "10000000100110000001110011");
    assert_eq!(
        WiegandCard::decode(&bits).unwrap(),
        WiegandCard::new(WiegandFormat::W26, 1, 12345).unwrap()
    );
    // The unknown PIN is a refusal: a manufacturer reply, version 1, unknown (2), by PIN (2).
    let refusal = panel
        .next_event(Duration::from_secs(5))
        .expect("the refusal");
    let OsdpEvent::MfgReply(m) = refusal else {
        panic!("expected a manufacturer reply, got {refusal:?}");
    };
    assert_eq!(m.vendor_code, (VENDOR[0], VENDOR[1], VENDOR[2]));
    assert_eq!(m.data, [1, 2, 2]);
    assert!(panel.secure(), "the secure channel stayed up");
    drop(engine);
    drop(panel);
    // Neither the card number nor the PIN is in any log line (LibOSDP's included).
    let logs = super::logs();
    assert!(logs.contains("OSDP reader started"), "the reader logs");
    assert!(
        logs.contains("libosdp"),
        "LibOSDP's log lines are captured too"
    );
    let tokens: Vec<&str> = logs.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    assert!(
        !tokens.contains(&"12345") && !tokens.contains(&"2580"),
        "a credential in the logs"
    );
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !logs.to_ascii_lowercase().contains(&key_hex) && !logs.contains("facegate-test-k1"),
        "the SCBK in the logs"
    );
}

#[test]
fn tamper_goes_to_the_panel_as_a_local_status_report() {
    let dir = tempfile::tempdir().unwrap();
    let ptys = PtyPair::new(dir.path());
    let (gate, mut sink) = OsdpReader::start(&settings(&ptys.pd, KEY)).unwrap().split();
    let panel = Panel::start(&ptys.cp, KEY);
    wait_until(
        Duration::from_secs(20),
        "secure channel on both sides",
        || gate.is_secure() && panel.secure(),
    );
    sink.alert(&AlertEvent {
        time: String::new(),
        unix_ms: 0,
        alert: "audit_chain_broken",
        detail: "test".into(),
    })
    .unwrap();
    let ev = panel
        .next_event(Duration::from_secs(5))
        .expect("the status");
    let OsdpEvent::Status(s) = ev else {
        panic!("expected a status report, got {ev:?}");
    };
    assert_eq!(s.type_, OsdpStatusReportType::Local);
    assert_eq!(s.report[0], 1, "tamper");
    assert_eq!(s.report[1], 0, "power");
}

#[test]
fn a_wrong_scbk_never_establishes_the_secure_channel_and_no_grant_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let ptys = PtyPair::new(dir.path());
    let (mut gate, _sink) = OsdpReader::start(&settings(&ptys.pd, KEY)).unwrap().split();
    let panel = Panel::start(&ptys.cp, OTHER_KEY);
    // The correct pair is secure within seconds (above); give this one longer.
    std::thread::sleep(Duration::from_secs(8));
    assert!(!panel.secure(), "the panel's side");
    assert!(!gate.is_secure(), "the terminal's side");
    let e = gate
        .pulse(&Pulse {
            subject: Some(SubjectId::new("alice").unwrap()),
            method: Method::Face,
            track: Some(1),
            card: Some(CardNumber::new("12345")),
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not polling") || e.contains("secure channel is not established"),
        "{e}"
    );
    while let Some(ev) = panel.next_event(Duration::from_millis(500)) {
        assert!(
            !matches!(ev, OsdpEvent::CardRead(_)),
            "a card read went out: {ev:?}"
        );
    }
}

#[test]
fn in_install_mode_the_panel_sets_the_terminals_key_which_is_then_required() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("osdp.scbk");
    let ptys = PtyPair::new(dir.path());
    let mut commissioning = settings(&ptys.pd, KEY);
    commissioning.security = OsdpSecurity::Secure {
        scbk: None,
        install_mode: true,
        key_file: Some(key_file.clone()),
    };
    let (gate, _sink) = OsdpReader::start(&commissioning).unwrap().split();
    // A panel that knows this terminal's new key falls back to the default key once (LibOSDP
    // does without EnforceSecure), then sends osdp_KEYSET.
    let panel = Panel::start_with(&ptys.cp, KEY, OsdpFlag::empty());
    wait_until(Duration::from_secs(30), "the key set by the panel", || {
        key_file.exists()
    });
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let written = Scbk::read(&key_file).unwrap();
    assert_eq!(
        format!("{written:?}"),
        "Scbk(<redacted>)",
        "the key is never printed"
    );
    drop(gate);
    drop(panel);
    drop(ptys);

    // The next start reads that key and refuses the default one: an enforcing panel with it
    // gets a secure channel.
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let ptys = PtyPair::new(&again);
    let mut running = settings(&ptys.pd, [0; 16]);
    running.security = OsdpSecurity::Secure {
        scbk: Some(written),
        install_mode: false,
        key_file: None,
    };
    let (gate, _sink) = OsdpReader::start(&running).unwrap().split();
    let panel = Panel::start(&ptys.cp, KEY);
    wait_until(
        Duration::from_secs(20),
        "secure channel with the set key",
        || gate.is_secure() && panel.secure(),
    );
}
