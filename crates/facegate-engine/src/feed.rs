//! The capture thread and the one-frame mailbox between it and the engine loop.
//!
//! Back-pressure: the mailbox holds at most one frame. In [`FramePolicy::NewestWins`] (a camera)
//! a new frame replaces a frame the engine has not taken yet, and the replaced one is counted as
//! dropped: a slow stage costs frames, never memory or latency. [`FramePolicy::Lossless`] makes
//! the capture thread wait instead (replays for tests and evaluation, where every frame counts).
//!
//! Failures: a per-frame error ([`CaptureError::is_frame_error`]) is counted and skipped. A source
//! marked `reopen` (a camera) that fails to open, fails fatally or ends is reopened with
//! exponential back-off (capped); any other source ends the stream at its end and reports a
//! fatal error to the engine.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use facegate_capture::{CaptureError, FrameSource};
use facegate_types::{ErrorChain, Frame};

/// Opens (and reopens) the frame source.
pub type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// What the capture thread does when the engine has not taken the previous frame yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FramePolicy {
    /// Replace it (count it dropped): the engine always sees the newest frame. For cameras.
    #[default]
    NewestWins,
    /// Wait until the engine takes it: no frame is lost. For replays in tests and evaluation.
    Lossless,
}

/// Counters shared by the capture thread and the engine.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames read from the source.
    pub captured: AtomicU64,
    /// Frames replaced in the mailbox before the engine took them.
    pub dropped: AtomicU64,
    /// Frames the source failed to produce (per-frame errors).
    pub bad_frames: AtomicU64,
    /// Times the source was (re)opened successfully.
    pub opens: AtomicU64,
    /// Failed open attempts.
    pub open_failures: AtomicU64,
}

/// How the stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// End of a replayed stream.
    Finished,
    /// Stopped on request.
    Stopped,
    /// A source that is not reopened failed.
    Failed(CaptureError),
}

/// What [`Mailbox::recv_timeout`] returns.
#[derive(Debug)]
pub enum Received {
    Frame(Frame, Instant),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The stream ended; no frame will follow.
    End(StreamEnd),
}

#[derive(Debug, Default)]
struct Slot {
    frame: Option<(Frame, Instant)>,
    end: Option<StreamEnd>,
    closed: bool,
}

/// A bounded (one frame) channel from the capture thread to the engine.
#[derive(Debug, Default)]
pub struct Mailbox {
    slot: Mutex<Slot>,
    ready: Condvar,
    taken: Condvar,
    /// Frames the consumer is done with, for the source to reuse (at most [`RETURNED_MAX`]).
    returned: Mutex<Vec<Frame>>,
}

/// Finished frames kept for reuse at most; more are freed.
const RETURNED_MAX: usize = 2;

impl Mailbox {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Frames waiting (0 or 1).
    pub fn len(&self) -> usize {
        usize::from(self.lock().frame.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a frame. `NewestWins` returns the frame it replaced (counted dropped by the caller);
    /// `Lossless` waits until the slot is free or `stop` is set (then the frame is returned).
    pub fn put(
        &self,
        frame: Frame,
        policy: FramePolicy,
        stop: &AtomicBool,
    ) -> Option<(Frame, Instant)> {
        let mut slot = self.lock();
        if policy == FramePolicy::Lossless {
            while slot.frame.is_some() && !slot.closed && !stop.load(Ordering::Relaxed) {
                slot = self
                    .taken
                    .wait_timeout(slot, Duration::from_millis(50))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if slot.frame.is_some() {
                return Some((frame, Instant::now()));
            }
        }
        let old = slot.frame.replace((frame, Instant::now()));
        drop(slot);
        self.ready.notify_one();
        old
    }

    /// Hands a processed frame back so the source can decode the next one into its buffer
    /// (no per-frame allocation after warm-up).
    pub fn give_back(&self, frame: Frame) {
        let mut r = self.returned.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() < RETURNED_MAX {
            r.push(frame);
        }
    }

    fn take_returned(&self) -> Option<Frame> {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    /// Marks the end of the stream (after any frame still waiting).
    pub fn close(&self, end: StreamEnd) {
        let mut slot = self.lock();
        if slot.end.is_none() {
            slot.end = Some(end);
        }
        drop(slot);
        self.ready.notify_all();
    }

    /// Tells a waiting producer to give up (the consumer is gone).
    fn shut(&self) {
        self.lock().closed = true;
        self.taken.notify_all();
    }

    /// Takes the waiting frame, or waits for one up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        let mut slot = self.lock();
        loop {
            if let Some((f, at)) = slot.frame.take() {
                drop(slot);
                self.taken.notify_one();
                return Received::Frame(f, at);
            }
            if let Some(end) = slot.end.take() {
                slot.closed = true;
                return Received::End(end);
            }
            if slot.closed {
                return Received::End(StreamEnd::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Received::Timeout;
            }
            slot = self
                .ready
                .wait_timeout(slot, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// How the capture thread runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureConfig {
    pub policy: FramePolicy,
    /// Reopen the source when it fails, cannot be opened or ends (cameras).
    pub reopen: bool,
    /// First wait before a reopen; doubles each failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Deliver replayed frames no faster than their timestamps (like a camera would).
    pub pace: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            policy: FramePolicy::NewestWins,
            reopen: false,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            pace: false,
        }
    }
}

/// The running capture thread.
#[derive(Debug)]
pub struct CaptureThread {
    pub mailbox: Arc<Mailbox>,
    pub stats: Arc<CaptureStats>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl CaptureThread {
    /// Starts capturing from the sources `opener` opens.
    pub fn spawn(
        opener: SourceOpener,
        config: CaptureConfig,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, std::io::Error> {
        let mailbox = Arc::new(Mailbox::new());
        let stats = Arc::new(CaptureStats::default());
        let (m, s, st) = (mailbox.clone(), stats.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("facegate-capture".into())
            .spawn(move || capture_loop(opener, config, &m, &s, &st))?;
        Ok(Self {
            mailbox,
            stats,
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.mailbox.shut();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("capture thread panicked");
        }
    }
}

impl Drop for CaptureThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps up to `d`, waking early when `stop` is set. Returns `false` if stopped.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn capture_loop(
    mut opener: SourceOpener,
    config: CaptureConfig,
    mailbox: &Mailbox,
    stats: &CaptureStats,
    stop: &AtomicBool,
) {
    let mut backoff = config.backoff_initial;
    let fail = |reason: String, backoff: &mut Duration| -> bool {
        stats.open_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = %reason,
            retry_in_ms = backoff.as_millis() as u64,
            "capture source unavailable, reopening"
        );
        let ok = sleep_unless_stopped(*backoff, stop);
        *backoff = (*backoff * 2).min(config.backoff_max);
        ok
    };
    'open: while !stop.load(Ordering::Relaxed) {
        let mut source = match opener() {
            Ok(s) => s,
            Err(e) if config.reopen => {
                if fail(ErrorChain(&e).to_string(), &mut backoff) {
                    continue 'open;
                }
                break 'open;
            }
            Err(e) => {
                mailbox.close(StreamEnd::Failed(e));
                return;
            }
        };
        stats.opens.fetch_add(1, Ordering::Relaxed);
        let info = source.info();
        tracing::info!(source = %info.name, kind = ?info.kind, "capture source open");
        let started = Instant::now();
        let mut good_since_open = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'open;
            }
            while let Some(done) = mailbox.take_returned() {
                source.recycle(done);
            }
            match source.next_frame() {
                Ok(Some(frame)) => {
                    stats.captured.fetch_add(1, Ordering::Relaxed);
                    good_since_open += 1;
                    if good_since_open == 1 {
                        backoff = config.backoff_initial;
                    }
                    if config.pace {
                        let due = started + frame.timestamp;
                        let now = Instant::now();
                        if due > now && !sleep_unless_stopped(due - now, stop) {
                            break 'open;
                        }
                    }
                    if let Some((old, _)) = mailbox.put(frame, config.policy, stop) {
                        if config.policy == FramePolicy::NewestWins {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        source.recycle(old);
                    }
                }
                Ok(None) if config.reopen => {
                    if fail("stream ended".into(), &mut backoff) {
                        continue 'open;
                    }
                    break 'open;
                }
                Ok(None) => {
                    mailbox.close(StreamEnd::Finished);
                    return;
                }
                Err(e) if e.is_frame_error() => {
                    let n = stats.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(error = %ErrorChain(&e), bad_frames = n, "frame dropped");
                }
                Err(e) if config.reopen => {
                    if fail(ErrorChain(&e).to_string(), &mut backoff) {
                        continue 'open;
                    }
                    break 'open;
                }
                Err(e) => {
                    mailbox.close(StreamEnd::Failed(e));
                    return;
                }
            }
        }
    }
    mailbox.close(StreamEnd::Stopped);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use facegate_capture::{SourceInfo, Y4mSource};

    use super::*;

    /// An endless synthetic source: 640x480 frames, as fast as asked. Every `bad_every`-th
    /// frame is a per-frame error.
    struct Synthetic {
        n: u64,
        limit: Option<u64>,
        bad_every: Option<u64>,
        info: SourceInfo,
    }

    fn y4m_info() -> SourceInfo {
        // A SourceInfo cannot be built outside its crate: borrow one from a tiny Y4M stream.
        let header = b"YUV4MPEG2 W2 H2 F30:1 C444\nFRAME\n\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        let src = Y4mSource::from_reader(std::io::Cursor::new(header), PathBuf::from("s"), 1000);
        src.unwrap().info()
    }

    impl Synthetic {
        fn new(limit: Option<u64>, bad_every: Option<u64>) -> Self {
            Self {
                n: 0,
                limit,
                bad_every,
                info: y4m_info(),
            }
        }
    }

    impl FrameSource for Synthetic {
        fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
            if self.limit.is_some_and(|l| self.n >= l) {
                return Ok(None);
            }
            self.n += 1;
            if self.bad_every.is_some_and(|b| self.n.is_multiple_of(b)) {
                return Err(CaptureError::CorruptFrame {
                    path: "synthetic".into(),
                    index: self.n,
                    reason: "test".into(),
                });
            }
            let f = Frame::from_rgb8(640, 480, vec![0; 640 * 480 * 3]).unwrap();
            Ok(Some(f.with_time(Duration::ZERO, self.n)))
        }

        fn info(&self) -> SourceInfo {
            self.info.clone()
        }
    }

    #[test]
    fn slow_consumer_drops_frames_and_never_queues_more_than_one() {
        let stop = Arc::new(AtomicBool::new(false));
        let opener: SourceOpener = Box::new(|| Ok(Box::new(Synthetic::new(None, None))));
        let mut t = CaptureThread::spawn(opener, CaptureConfig::default(), stop).unwrap();
        let mut got = 0;
        let mut last_seq = 0;
        while got < 15 {
            assert!(t.mailbox.len() <= 1);
            if let Received::Frame(f, _) = t.mailbox.recv_timeout(Duration::from_secs(2)) {
                assert!(f.sequence > last_seq, "frames arrive in order");
                last_seq = f.sequence;
                got += 1;
                std::thread::sleep(Duration::from_millis(15)); // a slow stage
            }
        }
        t.stop();
        let dropped = t.stats.dropped.load(Ordering::Relaxed);
        let captured = t.stats.captured.load(Ordering::Relaxed);
        assert!(dropped > 0, "a slow consumer must make the producer drop");
        assert!(captured >= dropped + got, "{captured} {dropped} {got}");
        assert!(t.mailbox.len() <= 1);
        // The newest frame won: the consumer skipped sequence numbers.
        assert!(last_seq > got, "last seq {last_seq} after {got} frames");
    }

    #[test]
    fn lossless_replay_delivers_every_frame_then_ends() {
        let stop = Arc::new(AtomicBool::new(false));
        let opener: SourceOpener = Box::new(|| Ok(Box::new(Synthetic::new(Some(20), Some(7)))));
        let config = CaptureConfig {
            policy: FramePolicy::Lossless,
            ..CaptureConfig::default()
        };
        let mut t = CaptureThread::spawn(opener, config, stop).unwrap();
        let mut seqs = Vec::new();
        loop {
            match t.mailbox.recv_timeout(Duration::from_secs(2)) {
                Received::Frame(f, _) => {
                    seqs.push(f.sequence);
                    t.mailbox.give_back(f);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Received::End(StreamEnd::Finished) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        t.stop();
        // Frames 7 and 14 were bad and skipped; every other frame arrived.
        let expected: Vec<u64> = (1..=20).filter(|n| n % 7 != 0).collect();
        assert_eq!(seqs, expected);
        assert_eq!(t.stats.bad_frames.load(Ordering::Relaxed), 2);
        assert_eq!(t.stats.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn failing_camera_is_reopened_with_growing_backoff() {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let a = attempts.clone();
        let opener: SourceOpener = Box::new(move || {
            let mut a = a.lock().unwrap();
            a.push(Instant::now());
            if a.len() <= 3 {
                Err(CaptureError::CameraNotFound {
                    device: "/dev/video9".into(),
                })
            } else {
                Ok(Box::new(Synthetic::new(Some(3), None)))
            }
        });
        let config = CaptureConfig {
            reopen: true,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(50),
            ..CaptureConfig::default()
        };
        let mut t = CaptureThread::spawn(opener, config, stop).unwrap();
        let mut frames = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while frames < 3 && Instant::now() < deadline {
            if let Received::Frame(..) = t.mailbox.recv_timeout(Duration::from_millis(200)) {
                frames += 1;
            }
        }
        t.stop();
        assert_eq!(frames, 3, "frames arrive after the camera comes back");
        let a = attempts.lock().unwrap();
        assert!(a.len() >= 4);
        let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= Duration::from_millis(20), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(40), "{gaps:?}");
        assert!(gaps[2] >= Duration::from_millis(50), "{gaps:?}");
        assert!(t.stats.open_failures.load(Ordering::Relaxed) >= 3);
    }

    #[test]
    fn a_missing_file_is_a_fatal_end_not_a_retry_loop() {
        let stop = Arc::new(AtomicBool::new(false));
        let opener: SourceOpener =
            Box::new(|| Ok(Box::new(Y4mSource::open("/nonexistent/x.y4m", 1000)?)));
        let mut t = CaptureThread::spawn(opener, CaptureConfig::default(), stop).unwrap();
        match t.mailbox.recv_timeout(Duration::from_secs(2)) {
            Received::End(StreamEnd::Failed(e)) => {
                assert!(e.to_string().contains("/nonexistent/x.y4m"));
            }
            other => panic!("unexpected {other:?}"),
        }
        t.stop();
    }

    #[test]
    fn stop_ends_a_lossless_producer_waiting_on_a_full_slot() {
        let stop = Arc::new(AtomicBool::new(false));
        let opener: SourceOpener = Box::new(|| Ok(Box::new(Synthetic::new(None, None))));
        let config = CaptureConfig {
            policy: FramePolicy::Lossless,
            ..CaptureConfig::default()
        };
        let mut t = CaptureThread::spawn(opener, config, stop).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let begun = Instant::now();
        t.stop();
        assert!(begun.elapsed() < Duration::from_secs(1));
    }
}
