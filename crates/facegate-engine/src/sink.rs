//! Where decision events go: JSON lines on a writer (stdout, which systemd sends to the journal),
//! Unix-socket subscribers, and an in-memory list for tests. No sink may block the loop.

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::EngineError;
use crate::decision::{AlertEvent, DecisionEvent, PromptEvent, StatusEvent};

/// Receives every decision. Implementations must return quickly: the gate loop calls them.
pub trait EventSink: Send + std::fmt::Debug {
    /// Delivers one event. An error is logged and counted by the engine, which goes on.
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError>;

    /// Delivers an alert (same stream as the decisions, one JSON line with an `alert` field).
    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError>;

    /// Delivers a liveness challenge prompt for the terminal's screen (one JSON line with a
    /// `prompt` field).
    fn prompt(&mut self, prompt: &PromptEvent) -> Result<(), EngineError>;

    /// Delivers what the terminal is doing apart from deciding (an enrollment's count-down and
    /// progress, one JSON line with an `activity` field). Sinks that feed no screen (metrics)
    /// need not implement it.
    fn status(&mut self, status: &StatusEvent) -> Result<(), EngineError> {
        let _ = status;
        Ok(())
    }
}

/// JSON lines on any writer; [`JsonLinesSink::stdout`] for the journal.
pub struct JsonLinesSink<W: Write + Send> {
    out: W,
    name: &'static str,
}

impl<W: Write + Send> std::fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> JsonLinesSink<W> {
    pub fn new(out: W, name: &'static str) -> Self {
        Self { out, name }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl JsonLinesSink<io::Stdout> {
    /// JSON lines on standard output (under systemd, the journal).
    pub fn stdout() -> Self {
        Self::new(io::stdout(), "stdout")
    }
}

impl<W: Write + Send> JsonLinesSink<W> {
    fn line(&mut self, mut line: String) -> Result<(), EngineError> {
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|source| EngineError::Sink {
                sink: self.name,
                source,
            })
    }
}

impl<W: Write + Send> EventSink for JsonLinesSink<W> {
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError> {
        self.line(event.to_json_line())
    }

    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError> {
        self.line(alert.to_json_line())
    }

    fn prompt(&mut self, prompt: &PromptEvent) -> Result<(), EngineError> {
        self.line(prompt.to_json_line())
    }

    fn status(&mut self, status: &StatusEvent) -> Result<(), EngineError> {
        self.line(status.to_json_line())
    }
}

/// Keeps every event in memory; clones share the list (tests, the admin API's recent events).
#[derive(Debug, Clone, Default)]
pub struct MemorySink(
    Arc<Mutex<Vec<DecisionEvent>>>,
    Arc<Mutex<Vec<AlertEvent>>>,
    Arc<Mutex<Vec<PromptEvent>>>,
    Arc<Mutex<Vec<StatusEvent>>>,
);

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<DecisionEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the alerts so far.
    pub fn alerts(&self) -> Vec<AlertEvent> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the challenge prompts so far.
    pub fn prompts(&self) -> Vec<PromptEvent> {
        self.2.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the status events so far.
    pub fn statuses(&self) -> Vec<StatusEvent> {
        self.3.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl EventSink for MemorySink {
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
        Ok(())
    }

    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError> {
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(alert.clone());
        Ok(())
    }

    fn prompt(&mut self, prompt: &PromptEvent) -> Result<(), EngineError> {
        self.2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prompt.clone());
        Ok(())
    }

    fn status(&mut self, status: &StatusEvent) -> Result<(), EngineError> {
        self.3
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(status.clone());
        Ok(())
    }
}

/// Decides whether a peer (uid, gid as the kernel reported them at `connect`) may subscribe.
pub type PeerCheck = Box<dyn Fn(u32, u32) -> bool + Send>;

/// Subscribers at most; later ones are closed at once until one leaves.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Subscribers of one uid at most.
pub const MAX_SUBSCRIBERS_PER_UID: usize = 4;
/// Connections accepted per event at most, so a flood of connections costs the gate loop a
/// bounded amount of work per event; the rest wait in the kernel's backlog.
pub const ACCEPTS_PER_EVENT: usize = 8;

/// Broadcasts JSON lines to every client connected to a Unix socket.
///
/// New subscribers are accepted (non-blocking, at most [`ACCEPTS_PER_EVENT`]) at each event, and
/// only when the peer check passes: by default root and the service's own uid; the binary adds
/// its groups with [`SocketBroadcaster::with_peer_check`]. At most [`MAX_SUBSCRIBERS`] (and
/// [`MAX_SUBSCRIBERS_PER_UID`] per uid) are kept. The service never reads from a subscriber:
/// the read side is shut down at accept, so whatever a peer sends costs the process nothing.
/// Each write is non-blocking: a subscriber whose socket buffer is full (it is not reading) or
/// that hung up is dropped, so a slow subscriber never holds up the gate.
pub struct SocketBroadcaster {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<(UnixStream, u32)>,
    dropped: u64,
    refused: u64,
    check: PeerCheck,
}

impl std::fmt::Debug for SocketBroadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketBroadcaster")
            .field("path", &self.path)
            .field("subscribers", &self.clients.len())
            .field("dropped", &self.dropped)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

/// The peer's uid, gid and pid as the kernel saw them at `connect` (SO_PEERCRED): how both
/// Unix sockets of the service (events here, admin in the binary) authorise a peer.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32, i32)> {
    use std::os::unix::io::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.uid, cred.gid, cred.pid))
}

impl SocketBroadcaster {
    /// Binds `path` (mode 0660; a stale socket file left by a previous run is replaced, any
    /// other existing file is refused).
    pub fn bind(path: &Path) -> Result<Self, EngineError> {
        let err = |source| EngineError::Socket {
            path: path.to_path_buf(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(err)?;
            } else {
                return Err(err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                )));
            }
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
        // SAFETY: geteuid has no preconditions.
        let own = unsafe { libc::geteuid() };
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            clients: Vec::new(),
            dropped: 0,
            refused: 0,
            check: Box::new(move |uid, _| uid == 0 || uid == own),
        })
    }

    /// Replaces the peer check (root and the service's own uid by default).
    #[must_use]
    pub fn with_peer_check(mut self, check: PeerCheck) -> Self {
        self.check = check;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connected subscribers.
    pub fn subscribers(&self) -> usize {
        self.clients.len()
    }

    /// Subscribers dropped so far (slow or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Connections refused so far (peer check, or too many subscribers).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Accepts up to [`ACCEPTS_PER_EVENT`] pending connections, keeping those that pass the
    /// peer check and the bounds.
    pub fn accept_pending(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Out of descriptors included: the connection waits in the backlog.
                    tracing::warn!(error = %e, "event socket accept failed");
                    break;
                }
            };
            let Ok((uid, gid, _)) = peer_credentials(&stream) else {
                self.refused += 1;
                continue;
            };
            let of_uid = self.clients.iter().filter(|(_, u)| *u == uid).count();
            if !(self.check)(uid, gid) {
                self.refused += 1;
                tracing::warn!(uid, "event socket: subscriber refused (not authorised)");
                continue;
            }
            if self.clients.len() >= MAX_SUBSCRIBERS || of_uid >= MAX_SUBSCRIBERS_PER_UID {
                self.refused += 1;
                tracing::warn!(
                    uid,
                    subscribers = self.clients.len(),
                    "event socket: too many subscribers"
                );
                continue;
            }
            if stream.set_nonblocking(true).is_ok()
                && stream.shutdown(std::net::Shutdown::Read).is_ok()
            {
                tracing::debug!(
                    subscribers = self.clients.len() + 1,
                    uid,
                    "event subscriber"
                );
                self.clients.push((stream, uid));
            }
        }
    }

    /// Sends one line to every subscriber, dropping those that cannot take it whole now.
    pub fn broadcast(&mut self, line: &[u8]) {
        self.accept_pending();
        let before = self.clients.len();
        self.clients
            .retain_mut(|(c, _)| matches!(c.write(line), Ok(n) if n == line.len()));
        let gone = before - self.clients.len();
        if gone > 0 {
            self.dropped += gone as u64;
            tracing::info!(
                dropped = gone,
                subscribers = self.clients.len(),
                "slow or closed event subscribers dropped"
            );
        }
    }
}

impl EventSink for SocketBroadcaster {
    fn emit(&mut self, event: &DecisionEvent) -> Result<(), EngineError> {
        let mut line = event.to_json_line();
        line.push('\n');
        self.broadcast(line.as_bytes());
        Ok(())
    }

    fn alert(&mut self, alert: &AlertEvent) -> Result<(), EngineError> {
        let mut line = alert.to_json_line();
        line.push('\n');
        self.broadcast(line.as_bytes());
        Ok(())
    }

    fn prompt(&mut self, prompt: &PromptEvent) -> Result<(), EngineError> {
        let mut line = prompt.to_json_line();
        line.push('\n');
        self.broadcast(line.as_bytes());
        Ok(())
    }

    fn status(&mut self, status: &StatusEvent) -> Result<(), EngineError> {
        let mut line = status.to_json_line();
        line.push('\n');
        self.broadcast(line.as_bytes());
        Ok(())
    }
}

impl Drop for SocketBroadcaster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    use facegate_types::UnixMillis;

    use super::*;
    use crate::decision::{Method, Mode, Outcome, StageLatency, rfc3339};

    fn event(track: u64) -> DecisionEvent {
        DecisionEvent {
            time: rfc3339(UnixMillis(1_700_000_000_000)),
            unix_ms: 1_700_000_000_000,
            track: Some(track),
            outcome: Outcome::Unknown,
            subject: None,
            method: Method::Face,
            mode: Mode::Identification,
            score: Some(0.12),
            frames: 2,
            reason: Some("below_threshold".into()),
            latency_ms: StageLatency::default(),
        }
    }

    #[test]
    fn json_lines_sink_writes_one_line_per_event() {
        let mut sink = JsonLinesSink::new(Vec::new(), "buffer");
        sink.emit(&event(1)).unwrap();
        sink.emit(&event(2)).unwrap();
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["track"], 2);
        assert_eq!(v["outcome"], "unknown");
    }

    #[test]
    fn socket_subscribers_get_lines_and_a_stalled_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        let mut b = SocketBroadcaster::bind(&path).unwrap();
        let reader = UnixStream::connect(&path).unwrap();
        let stalled = UnixStream::connect(&path).unwrap();
        b.emit(&event(1)).unwrap();
        assert_eq!(b.subscribers(), 2);
        let mut lines = BufReader::new(reader.try_clone().unwrap());
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert!(line.contains("\"track\":1"), "{line}");

        // Keep emitting; the reader reads, the stalled client never does. Its buffer fills
        // and it is dropped, while emit stays fast.
        let reader_thread = std::thread::spawn(move || {
            let mut n = 0;
            let mut line = String::new();
            while lines.read_line(&mut line).map(|k| k > 0).unwrap_or(false) {
                n += 1;
                line.clear();
            }
            n
        });
        let started = Instant::now();
        let mut i = 0;
        while b.subscribers() == 2 && i < 200_000 {
            b.emit(&event(i)).unwrap();
            i += 1;
            // A pace the reading subscriber can follow; the stalled one reads nothing.
            std::thread::sleep(Duration::from_micros(200));
        }
        assert_eq!(b.subscribers(), 1, "the stalled subscriber must be dropped");
        assert_eq!(b.dropped(), 1);
        assert!(started.elapsed() < Duration::from_secs(20));
        drop(stalled);
        drop(b); // closes the reader's connection and removes the socket file
        assert!(reader_thread.join().unwrap() > 0);
        assert!(!path.exists());
    }

    #[test]
    fn refused_peers_and_subscribers_beyond_the_bounds_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sock");
        // A check that refuses everybody: nobody is kept, every connection counted as refused.
        let mut b = SocketBroadcaster::bind(&path)
            .unwrap()
            .with_peer_check(Box::new(|_, _| false));
        let refused = UnixStream::connect(&path).unwrap();
        b.emit(&event(1)).unwrap();
        assert_eq!((b.subscribers(), b.refused()), (0, 1));
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = String::new();
        assert_eq!(
            BufReader::new(&refused).read_line(&mut buf).unwrap(),
            0,
            "closed, no event"
        );

        // The default check admits this process's own uid, up to the per-uid bound; each event
        // accepts a bounded number of connections.
        let mut b = SocketBroadcaster::bind(&path).unwrap();
        let clients: Vec<UnixStream> = (0..ACCEPTS_PER_EVENT + 3)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        b.accept_pending();
        assert_eq!(b.subscribers(), MAX_SUBSCRIBERS_PER_UID);
        assert_eq!(
            b.refused(),
            (ACCEPTS_PER_EVENT - MAX_SUBSCRIBERS_PER_UID) as u64
        );
        b.accept_pending();
        assert_eq!(
            b.refused(),
            (ACCEPTS_PER_EVENT + 3 - MAX_SUBSCRIBERS_PER_UID) as u64
        );
        // What a subscriber writes is never read: the read side is shut down.
        let mut c = clients[0].try_clone().unwrap();
        assert!(
            c.write_all(b"hello").is_err(),
            "writes to the service must fail"
        );
    }

    #[test]
    fn bind_refuses_a_regular_file_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"x").unwrap();
        assert!(SocketBroadcaster::bind(&file).is_err());
        let path = dir.path().join("s.sock");
        let first = UnixListener::bind(&path).unwrap();
        drop(first); // leaves the socket file behind
        let b = SocketBroadcaster::bind(&path).unwrap();
        assert_eq!(b.path(), path);
    }
}
