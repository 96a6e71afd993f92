//! The bounded on-disk spool: one file per message, named by a sequence number, written to a
//! temporary name and renamed (a crash leaves either the whole message or none). The relay
//! spools every event first and removes it only once the broker acknowledged it (QoS 1), so
//! the broker being away, the relay restarting or the machine losing power loses nothing that
//! was spooled. At most `max` messages are kept: beyond that the oldest is removed and counted
//! in the file `dropped` (never unbounded).

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::RelayError;

const SUFFIX: &str = ".msg";
const DROPPED: &str = "dropped";

/// One spooled message: where it goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledMessage {
    pub seq: u64,
    pub topic: String,
    pub payload: String,
}

/// The spool directory and its bound.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
    queue: VecDeque<u64>,
    next: u64,
    dropped: u64,
}

impl Spool {
    /// Opens (or creates, mode 0700) the spool in `dir`: finds the messages a previous run
    /// left, removes half-written temporary files, and drops the oldest beyond `max` (a bound
    /// lowered since), counting them.
    pub fn open(dir: &Path, max: usize) -> Result<Self, RelayError> {
        let err = |op| {
            let path = dir.to_path_buf();
            move |source| RelayError::Spool { path, op, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err("create"))?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(err("list"))? {
            let entry = entry.map_err(err("list"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            } else if let Some(seq) = name.strip_suffix(SUFFIX).and_then(|s| s.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let dropped = match fs::read_to_string(dir.join(DROPPED)) {
            Ok(t) => t.trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        let next = seqs.last().map_or(1, |s| s + 1);
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max: max.max(1),
            queue: seqs.into(),
            next,
            dropped,
        };
        spool.enforce_bound()?;
        Ok(spool)
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    fn err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> RelayError + '_ {
        move |source| RelayError::Spool {
            path: self.dir.clone(),
            op,
            source,
        }
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RelayError> {
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(self.err("write"))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_data())
            .map_err(self.err("write"))?;
        fs::rename(&tmp, path).map_err(self.err("rename"))
    }

    fn enforce_bound(&mut self) -> Result<(), RelayError> {
        let mut dropped_now = 0u64;
        while self.queue.len() > self.max {
            if let Some(seq) = self.queue.pop_front() {
                let _ = fs::remove_file(self.file(seq));
                dropped_now += 1;
            }
        }
        if dropped_now > 0 {
            self.dropped += dropped_now;
            self.write_atomic(&self.dir.join(DROPPED), self.dropped.to_string().as_bytes())?;
            tracing::warn!(
                dropped = dropped_now,
                dropped_total = self.dropped,
                bound = self.max,
                "spool full: oldest events dropped"
            );
        }
        Ok(())
    }

    /// Appends a message (durably) and drops the oldest beyond the bound.
    pub fn push(&mut self, topic: &str, payload: &str) -> Result<u64, RelayError> {
        let seq = self.next;
        let mut bytes = Vec::with_capacity(topic.len() + payload.len() + 1);
        bytes.extend_from_slice(topic.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(payload.as_bytes());
        self.write_atomic(&self.file(seq), &bytes)?;
        self.next += 1;
        self.queue.push_back(seq);
        self.enforce_bound()?;
        Ok(seq)
    }

    /// The oldest message, if any. A file that cannot be read as a message (edited by hand)
    /// is removed, counted as dropped and skipped.
    pub fn front(&mut self) -> Result<Option<SpooledMessage>, RelayError> {
        while let Some(&seq) = self.queue.front() {
            let path = self.file(seq);
            let parsed = fs::read(&path).ok().and_then(|b| {
                let text = String::from_utf8(b).ok()?;
                let (topic, payload) = text.split_once('\n')?;
                Some((topic.to_owned(), payload.to_owned()))
            });
            match parsed {
                Some((topic, payload)) => {
                    return Ok(Some(SpooledMessage {
                        seq,
                        topic,
                        payload,
                    }));
                }
                None => {
                    tracing::warn!(file = %path.display(), "unreadable spool file dropped");
                    let _ = fs::remove_file(&path);
                    self.queue.pop_front();
                    self.dropped += 1;
                    self.write_atomic(
                        &self.dir.join(DROPPED),
                        self.dropped.to_string().as_bytes(),
                    )?;
                }
            }
        }
        Ok(None)
    }

    /// Removes message `seq` once the broker has it (only the oldest is ever removed).
    pub fn remove(&mut self, seq: u64) -> Result<(), RelayError> {
        if self.queue.front() == Some(&seq) {
            match fs::remove_file(self.file(seq)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.err("remove")(e)),
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Messages dropped so far (bound, unreadable files), over every run.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ordered_and_kept_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 3).unwrap();
        for i in 1..=5 {
            s.push("t", &format!("m{i}")).unwrap();
        }
        assert_eq!((s.len(), s.dropped()), (3, 2));
        let m = s.front().unwrap().unwrap();
        assert_eq!(m.payload, "m3");
        s.remove(m.seq).unwrap();
        drop(s);
        // A half-written file from a crash is ignored and removed.
        std::fs::write(dir.path().join("00000000000000000099.tmp"), "t\nhalf").unwrap();
        let mut s = Spool::open(dir.path(), 3).unwrap();
        assert_eq!((s.len(), s.dropped()), (2, 2));
        s.push("t", "m6").unwrap();
        let mut got = Vec::new();
        while let Some(m) = s.front().unwrap() {
            got.push(m.payload.clone());
            s.remove(m.seq).unwrap();
        }
        assert_eq!(got, ["m4", "m5", "m6"]);
        assert!(!dir.path().join("00000000000000000099.tmp").exists());
        // A lower bound at reopen drops the oldest, counted.
        for i in 7..=10 {
            s.push("t", &format!("m{i}")).unwrap();
        }
        drop(s);
        let s = Spool::open(dir.path(), 1).unwrap();
        assert_eq!((s.len(), s.dropped()), (1, 5));
    }
}
