//! facegate as an OSDP reader: a Peripheral Device (IEC 60839-11-5 / SIA OSDP 2.2, through
//! LibOSDP) on a serial line, so the site's access-control panel (the Control Panel) takes the
//! decision as it does for its card readers.
//!
//! - A **grant** is reported as a card read (`osdp_RAW`, Wiegand format) of the subject's card
//!   number from the credential register, in the configured 26- or 34-bit format with the
//!   site's facility code (the same bits [`crate::wiegand`] puts on D0/D1).
//! - A **refusal** (`denied`, `unknown`, `spoof_suspected`) is a manufacturer reply
//!   (`osdp_MFGREP`, the protocol's only PD-to-CP message for events it does not define) with
//!   the configured vendor code and three bytes: format version 1, the outcome (1 denied,
//!   2 unknown, 3 spoof suspected) and the method (1 face, 2 PIN, 3 card, 4 QR, 5 override). No
//!   subject id goes out: the panel learns that someone was refused, not who.
//! - **Tamper** (the audit chain found broken, the clock set back) is a local status report
//!   (`osdp_LSTATR`: tamper 1, power 0).
//! - The **secure channel** is on by default with the terminal's own SCBK (16 bytes, 32 hex
//!   digits in a root-only file or a systemd credential), and `EnforceSecure` refuses the
//!   well-known default key. Install mode (the default key for one session, so the panel can set
//!   this terminal's key with `osdp_KEYSET`, which is then written to the key file) only when
//!   configured.
//!
//! The PD runs on its own thread (LibOSDP must be refreshed every 50 ms); the gate output and
//! the event sink only queue reports without blocking. A grant is refused, not queued, while the
//! panel is not polling or the secure channel is down: a card read delivered late could open
//! the door for somebody else.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

use libosdp::{
    Channel, ChannelError, OsdpCommand, OsdpEvent, OsdpEventCardRead, OsdpEventMfgReply, OsdpFlag,
    OsdpStatusReport, OsdpStatusReportType, PdCapEntity, PdCapability, PdInfoBuilder,
    PeripheralDevice,
};
use zeroize::Zeroizing;

use crate::EngineError;
use crate::decision::{AlertEvent, DecisionEvent, Method, Outcome, PromptEvent};
use crate::gate::{GateOutput, Pulse};
use crate::sink::EventSink;
use crate::wiegand::{WiegandBits, WiegandFormat, card_of};

/// The baud rates OSDP (and LibOSDP) allow.
pub const OSDP_BAUD_RATES: [u32; 6] = [9600, 19200, 38400, 57600, 115200, 230400];

/// The highest PD address (127 is the broadcast address).
pub const MAX_OSDP_ADDRESS: u8 = 126;

/// How often the PD thread refreshes LibOSDP (it needs at least every 50 ms).
const REFRESH: Duration = Duration::from_millis(10);

/// Reports waiting for the PD thread at most.
const QUEUE: usize = 16;

/// A Secure Channel Base Key (16 bytes), zeroised on drop, never printed.
#[derive(Clone)]
pub struct Scbk(Zeroizing<[u8; 16]>);

impl std::fmt::Debug for Scbk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scbk(<redacted>)")
    }
}

impl Scbk {
    pub fn new(bytes: [u8; 16]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads 32 hex digits from `path`, which must be a regular file of this user that nobody
    /// else can read or write (mode 0600 or 0400, as `facegate keygen` makes the master key).
    pub fn read(path: &Path) -> Result<Self, String> {
        Self::check_private(path)?;
        Self::read_unchecked(path)
    }

    /// Reads a systemd credential (`$CREDENTIALS_DIRECTORY/NAME`): systemd makes it readable by
    /// the service only, so no mode check (as for the master key).
    pub fn read_credential(dir: &Path, name: &str) -> Result<Self, String> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "credential {name:?}: a credential name is a plain file name"
            ));
        }
        Self::read_unchecked(&dir.join(name))
    }

    fn check_private(path: &Path) -> Result<(), String> {
        let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: mode {mode:04o} lets others read it; chmod 600 it",
                path.display()
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != euid {
            return Err(format!(
                "{}: owned by uid {}, not by this service's uid {euid}",
                path.display(),
                meta.uid()
            ));
        }
        Ok(())
    }

    fn read_unchecked(path: &Path) -> Result<Self, String> {
        let mut text = Zeroizing::new(String::new());
        fs::File::open(path)
            .and_then(|f| f.take(128).read_to_string(&mut text))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_hex(text.trim())
            .ok_or_else(|| format!("{}: must hold 32 hex digits (16 bytes)", path.display()))
    }

    fn from_hex(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut key = Zeroizing::new([0u8; 16]);
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            key[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Self(key))
    }

    fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(33));
        for b in self.0.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }
}

/// The secure channel.
#[derive(Debug, Clone)]
pub enum OsdpSecurity {
    /// The terminal's SCBK; the default key is refused.
    Secure {
        scbk: Option<Scbk>,
        /// Accept the default key for one session and take a KEYSET, written to `key_file`.
        install_mode: bool,
        key_file: Option<PathBuf>,
    },
    /// No secure channel (a panel that cannot do it; configured explicitly).
    Plain,
}

/// Everything the reader needs.
#[derive(Debug, Clone)]
pub struct OsdpSettings {
    /// The serial device (an RS-485 adapter, e.g. `/dev/ttyUSB0`).
    pub device: PathBuf,
    pub baud: u32,
    /// This PD's address on the bus (0..=126).
    pub address: u8,
    pub security: OsdpSecurity,
    /// The card format of grants.
    pub format: WiegandFormat,
    /// The site's facility code in that format.
    pub facility: u32,
    /// The IEEE OUI in refusal reports (`osdp_MFGREP`).
    pub vendor_code: [u8; 3],
}

/// What the PD thread sends.
#[derive(Debug)]
enum Report {
    Card(WiegandBits),
    Refusal { outcome: u8, method: u8 },
    Tamper,
}

/// The link as the PD thread last saw it.
#[derive(Debug, Default)]
struct Link {
    online: AtomicBool,
    secure: AtomicBool,
}

/// A serial line in raw mode, non-blocking, as LibOSDP wants its channel.
#[derive(Debug)]
pub struct SerialChannel {
    file: fs::File,
    id: i32,
}

fn speed(baud: u32) -> Option<libc::speed_t> {
    Some(match baud {
        9600 => libc::B9600,
        19200 => libc::B19200,
        38400 => libc::B38400,
        57600 => libc::B57600,
        115200 => libc::B115200,
        230400 => libc::B230400,
        _ => return None,
    })
}

impl SerialChannel {
    /// Opens `device` read-write, non-blocking, without making it the controlling terminal,
    /// and sets it to raw 8N1 at `baud`.
    pub fn open(device: &Path, baud: u32) -> Result<Self, String> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(device)
            .map_err(|e| format!("cannot open the serial device: {e}"))?;
        let rate = speed(baud).ok_or_else(|| format!("baud rate {baud} is not an OSDP rate"))?;
        let fd = file.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor we own, and
        // the calls below only read and write that struct and the descriptor's settings.
        let rc = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                -1
            } else {
                libc::cfmakeraw(&mut t);
                t.c_cflag |= libc::CLOCAL | libc::CREAD;
                t.c_cflag &= !(libc::CSTOPB | libc::PARENB | libc::CRTSCTS);
                t.c_cc[libc::VMIN] = 0;
                t.c_cc[libc::VTIME] = 0;
                if libc::cfsetispeed(&mut t, rate) != 0 || libc::cfsetospeed(&mut t, rate) != 0 {
                    -1
                } else {
                    libc::tcsetattr(fd, libc::TCSANOW, &t)
                }
            }
        };
        if rc != 0 {
            return Err(format!(
                "not a serial line ({})",
                io::Error::last_os_error()
            ));
        }
        Ok(Self { file, id: fd })
    }
}

impl Channel for SerialChannel {
    fn get_id(&self) -> i32 {
        self.id
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        match self.file.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        match self.file.write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// The running reader; [`OsdpReader::split`] gives its [`OsdpGate`] (grants) and its
/// [`OsdpSink`] (refusals and tamper). The PD thread ends when both are dropped.
#[derive(Debug)]
pub struct OsdpReader {
    gate: OsdpGate,
    sink: OsdpSink,
}

/// The grant side of the reader (a [`GateOutput`]).
#[derive(Debug)]
pub struct OsdpGate {
    name: String,
    tx: SyncSender<Report>,
    link: Arc<Link>,
    format: WiegandFormat,
    facility: u32,
    secure: bool,
}

/// The refusal and tamper side of the reader (an [`EventSink`]).
#[derive(Debug)]
pub struct OsdpSink {
    tx: SyncSender<Report>,
    link: Arc<Link>,
}

fn gate_err(name: &str, reason: String) -> EngineError {
    EngineError::Gate {
        output: name.to_owned(),
        reason,
    }
}

/// Writes a key set by the panel (install mode) to `path`, mode 0600, replacing it atomically.
fn store_key(path: &Path, key: &Scbk) -> io::Result<()> {
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.to_hex().as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl OsdpReader {
    /// Opens the serial line, sets the PD up and starts its thread.
    pub fn start(settings: &OsdpSettings) -> Result<Self, EngineError> {
        let name = format!("osdp:{}@{}", settings.device.display(), settings.address);
        let err = |reason: String| gate_err(&name, reason);
        let channel = SerialChannel::open(&settings.device, settings.baud).map_err(err)?;
        let lib = |e: libosdp::OsdpError| err(format!("LibOSDP: {e}"));
        let mut info = PdInfoBuilder::new()
            .name("facegate")
            .map_err(lib)?
            .address(i32::from(settings.address))
            .map_err(lib)?
            .baud_rate(settings.baud as i32)
            .map_err(lib)?
            .capability(PdCapability::CardDataFormat(PdCapEntity::new(1, 1)));
        let mut key_file = None;
        let secure = match &settings.security {
            OsdpSecurity::Secure {
                scbk,
                install_mode,
                key_file: file,
            } => {
                info = info.capability(PdCapability::CommunicationSecurity(PdCapEntity::new(1, 1)));
                if let Some(k) = scbk {
                    info = info.secure_channel_key(*k.0);
                }
                info = info.flag(if *install_mode {
                    OsdpFlag::InstallMode
                } else {
                    OsdpFlag::EnforceSecure
                });
                key_file = file.clone().filter(|_| *install_mode);
                true
            }
            OsdpSecurity::Plain => false,
        };
        let mut pd = PeripheralDevice::new(info, Box::new(channel)).map_err(lib)?;
        pd.set_command_callback(move |cmd| match cmd {
            OsdpCommand::KeySet(k) => {
                let (Some(path), Ok(bytes)) = (&key_file, <[u8; 16]>::try_from(&k.data[..]))
                else {
                    tracing::warn!("OSDP: KEYSET refused (not in install mode)");
                    return -1;
                };
                match store_key(path, &Scbk::new(bytes)) {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), "OSDP: the panel set this terminal's SCBK");
                        0
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "OSDP: cannot store the SCBK");
                        -1
                    }
                }
            }
            // LEDs, buzzer, text and outputs: the terminal's screen shows the decision itself.
            _ => 0,
        });
        let (tx, rx) = sync_channel(QUEUE);
        let link = Arc::new(Link::default());
        let thread_link = Arc::clone(&link);
        let vendor = settings.vendor_code;
        let thread_name = name.clone();
        std::thread::Builder::new()
            .name("facegate-osdp".into())
            .spawn(move || run_pd(pd, rx, &thread_link, vendor, &thread_name))
            .map_err(|e| err(format!("cannot start the OSDP thread: {e}")))?;
        tracing::info!(output = %name, secure, "OSDP reader started");
        Ok(Self {
            gate: OsdpGate {
                name,
                tx: tx.clone(),
                link: Arc::clone(&link),
                format: settings.format,
                facility: settings.facility,
                secure,
            },
            sink: OsdpSink { tx, link },
        })
    }

    /// The two halves: the gate output (grants) and the event sink (refusals, tamper).
    pub fn split(self) -> (OsdpGate, OsdpSink) {
        (self.gate, self.sink)
    }
}

fn run_pd(
    mut pd: PeripheralDevice,
    rx: Receiver<Report>,
    link: &Link,
    vendor: [u8; 3],
    name: &str,
) {
    loop {
        loop {
            let report = match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
            let event = match report {
                Report::Card(bits) => {
                    match OsdpEventCardRead::new_wiegand(bits.0.len(), bits.to_bytes()) {
                        Ok(c) => OsdpEvent::CardRead(c),
                        Err(e) => {
                            tracing::error!(output = name, error = %e, "OSDP card read not built");
                            continue;
                        }
                    }
                }
                Report::Refusal { outcome, method } => OsdpEvent::MfgReply(OsdpEventMfgReply {
                    vendor_code: (vendor[0], vendor[1], vendor[2]),
                    data: vec![1, outcome, method],
                }),
                Report::Tamper => {
                    let mut report = [0u8; 64];
                    report[0] = 1;
                    OsdpEvent::Status(OsdpStatusReport {
                        type_: OsdpStatusReportType::Local,
                        nr_entries: 2,
                        report,
                    })
                }
            };
            if let Err(e) = pd.notify_event(event) {
                tracing::error!(output = name, error = %e, "OSDP event not queued");
            }
        }
        pd.refresh();
        let (online, secure) = (pd.is_online(), pd.is_sc_active());
        if link.online.swap(online, Ordering::Relaxed) != online {
            if online {
                tracing::info!(output = name, "OSDP: the control panel is polling");
            } else {
                tracing::warn!(output = name, "OSDP: the control panel stopped polling");
                pd.flush_events();
            }
        }
        if link.secure.swap(secure, Ordering::Relaxed) != secure {
            tracing::info!(output = name, secure, "OSDP secure channel");
        }
        std::thread::sleep(REFRESH);
    }
}

impl OsdpGate {
    /// The panel polls this PD.
    pub fn is_online(&self) -> bool {
        self.link.online.load(Ordering::Relaxed)
    }

    /// The secure channel is established.
    pub fn is_secure(&self) -> bool {
        self.link.secure.load(Ordering::Relaxed)
    }
}

impl GateOutput for OsdpGate {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn wants_card(&self) -> bool {
        true
    }

    fn pulse(&mut self, pulse: &Pulse) -> Result<(), EngineError> {
        let card =
            card_of(pulse, self.format, self.facility).map_err(|r| gate_err(&self.name, r))?;
        if !self.is_online() {
            return Err(gate_err(
                &self.name,
                "the control panel is not polling; the grant is not reported".into(),
            ));
        }
        if self.secure && !self.is_secure() {
            return Err(gate_err(
                &self.name,
                "the secure channel is not established (wrong SCBK on either side?); the grant \
                 is not reported"
                    .into(),
            ));
        }
        self.tx
            .try_send(Report::Card(card.encode()))
            .map_err(|e| match e {
                TrySendError::Full(_) => gate_err(&self.name, "the OSDP queue is full".into()),
                TrySendError::Disconnected(_) => {
                    gate_err(&self.name, "the OSDP thread has stopped".into())
                }
            })
    }
}

fn outcome_code(outcome: Outcome) -> Option<u8> {
    match outcome {
        Outcome::Denied => Some(1),
        Outcome::Unknown => Some(2),
        Outcome::SpoofSuspected => Some(3),
        Outcome::Granted | Outcome::Retry => None,
    }
}

fn method_code(method: Method) -> u8 {
    match method {
        Method::Face => 1,
        Method::Pin => 2,
        Method::Card => 3,
        Method::Qr => 4,
        Method::Override => 5,
    }
}

impl OsdpSink {
    fn send(&self, report: Report) -> Result<(), EngineError> {
        if !self.link.online.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.tx.try_send(report).map_err(|_| EngineError::Sink {
            sink: "osdp",
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                "the OSDP queue is full or stopped",
            ),
        })
    }
}

impl EventSink for OsdpSink {
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError> {
        match outcome_code(event.outcome) {
            Some(outcome) => self.send(Report::Refusal {
                outcome,
                method: method_code(event.method),
            }),
            None => Ok(()),
        }
    }

    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError> {
        match alert.alert {
            "audit_chain_broken" | "clock_set_back" => self.send(Report::Tamper),
            _ => Ok(()),
        }
    }

    fn prompt(&mut self, _prompt: &PromptEvent) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_scbk_file_must_be_private_and_hold_32_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("osdp.scbk");
        fs::write(&p, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Scbk::read(&p).unwrap_err();
        assert!(
            e.ends_with("mode 0644 lets others read it; chmod 600 it"),
            "{e}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let k = Scbk::read(&p).unwrap();
        assert_eq!(k.0[15], 0x0f);
        assert_eq!(format!("{k:?}"), "Scbk(<redacted>)");
        assert_eq!(k.to_hex().as_str(), "000102030405060708090a0b0c0d0e0f\n");
        fs::write(&p, "0001020304").unwrap();
        let e = Scbk::read(&p).unwrap_err();
        assert!(e.ends_with("must hold 32 hex digits (16 bytes)"), "{e}");
        fs::write(&p, "zz0102030405060708090a0b0c0d0e0f").unwrap();
        assert!(Scbk::read(&p).is_err());
        // A systemd credential: systemd keeps it private, so no mode check; the name is a
        // plain file name.
        fs::write(dir.path().join("cred"), "ffeeddccbbaa99887766554433221100").unwrap();
        fs::set_permissions(dir.path().join("cred"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            Scbk::read_credential(dir.path(), "cred").unwrap().0[0],
            0xff
        );
        let e = Scbk::read_credential(dir.path(), "../cred").unwrap_err();
        assert!(e.ends_with("a credential name is a plain file name"), "{e}");
        // A key the panel sets in install mode is written back private.
        store_key(&p, &Scbk::new([7; 16])).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(*Scbk::read(&p).unwrap().0, [7; 16]);
    }

    #[test]
    fn a_missing_or_non_serial_device_is_a_clear_error() {
        let settings = OsdpSettings {
            device: "/nonexistent/ttyUSB9".into(),
            baud: 115200,
            address: 1,
            security: OsdpSecurity::Plain,
            format: WiegandFormat::W26,
            facility: 1,
            vendor_code: [0, 0, 0],
        };
        let e = OsdpReader::start(&settings).unwrap_err().to_string();
        assert!(
            e.starts_with("gate output osdp:/nonexistent/ttyUSB9@1: cannot open the serial device"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-tty");
        fs::write(&file, b"").unwrap();
        let e = OsdpReader::start(&OsdpSettings {
            device: file,
            ..settings
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a serial line"), "{e}");
    }
}
