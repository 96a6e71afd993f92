//! Faults (invariant 7): kill -9 during enrollment and deletion, a read-only database, a
//! corrupted page, and key files with the wrong mode or owner.
//!
//! Child processes are this test binary itself, run with `--exact <test>` and an environment
//! variable that switches the named test into its child role; without the variable those tests
//! return at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_store::{DB_FILE_NAME, KeySource, MasterKey, Store, StoreError, generate_key_file};
use facegate_types::{ManualClock, SubjectId, UnixMillis};

use crate::common::*;

const CHILD_DIR: &str = "FACEGATE_STORE_TEST_CHILD_DIR";
const CHILD_SEED: &str = "FACEGATE_STORE_TEST_CHILD_SEED";
const RO_CHILD_DIR: &str = "FACEGATE_STORE_TEST_RO_DIR";

fn spawn_child(test: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Child role: enroll and delete in a loop, printing each step after it returns.
#[test]
fn child_enroll_delete_loop() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let clock = ManualClock::new(T0);
    let policy = policy();
    let mut store = open_at(Path::new(&dir), &key(1), &clock, &policy);
    store.load_gallery(MODEL, DIM).unwrap();
    let mut live: Vec<String> = Vec::new();
    for i in 0..100_000u64 {
        let name = format!("r{seed}-{i}");
        let c = consent(&policy, &name, 30, T0);
        let t = store
            .enroll(&c, &[emb(seed * 1_000_003 + i)], MODEL)
            .unwrap();
        println!("ENROLLED {name} {}", t.0);
        live.push(name);
        if i % 3 == 2 {
            let victim = live.remove((i as usize * 7) % live.len());
            println!("DELETING {victim}");
            if i % 2 == 0 {
                store
                    .delete_subject(&sid(&victim), "op-7", "fault test")
                    .unwrap();
            } else {
                store.withdraw(&withdrawal(&victim, T0)).unwrap();
            }
            println!("DELETED {victim}");
        }
    }
}

#[derive(Debug, Default)]
struct Reported {
    /// subject -> template id, for enrollments reported committed.
    enrolled: BTreeMap<String, u64>,
    deleting: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

fn parse_child_output(out: &[u8], rep: &mut Reported) -> usize {
    let text = String::from_utf8_lossy(out);
    // A line cut by the kill has no newline: ignore it.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut steps = 0;
    for line in complete.lines() {
        // The harness prints `test <name> ... ` without a newline before the first step.
        let start = ["ENROLLED ", "DELETING ", "DELETED "]
            .iter()
            .filter_map(|m| line.find(m))
            .min();
        let Some(start) = start else {
            continue;
        };
        let parts: Vec<&str> = line[start..].split_whitespace().collect();
        match parts.as_slice() {
            ["ENROLLED", name, id] => {
                rep.enrolled.insert((*name).to_owned(), id.parse().unwrap());
                steps += 1;
            }
            ["DELETING", name] => {
                rep.deleting.insert((*name).to_owned());
            }
            ["DELETED", name] => {
                rep.deleted.insert((*name).to_owned());
                steps += 1;
            }
            _ => {}
        }
    }
    steps
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_during_enroll_and_delete_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    let mut rep = Reported::default();
    let rounds = 6;
    for round in 0..rounds {
        let mut child = spawn_child(
            "faults::child_enroll_delete_loop",
            &[
                (CHILD_DIR, dir.path().to_str().unwrap().to_owned()),
                (CHILD_SEED, round.to_string()),
            ],
        );
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            // Signal once the first step is out, keep reading until the pipe closes.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let mut signalled = false;
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if !signalled && contains(&buf, b"ENROLLED ") {
                    let _ = tx.send(());
                    signalled = true;
                }
            }
            buf
        });
        // Wait until the child is under way, then kill it at a random point of its loop.
        let started = rx.recv_timeout(Duration::from_secs(60)).is_ok();
        let delay = Duration::from_millis(rng.next() % 300);
        let start = Instant::now();
        while started && start.elapsed() < delay {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("child exited early with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed");
        if !started {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("child never enrolled anything: {err}");
        }
        let out = reader.join().unwrap();
        let steps = parse_child_output(&out, &mut rep);
        eprintln!("round {round}: killed {delay:?} after the first step, {steps} steps reported");

        // Reopen after every kill: consistent, nothing committed lost, chain intact.
        check_after_kill(dir.path(), &rep);
    }
    assert!(
        rep.enrolled.len() >= rounds,
        "the children did some work: {rep:?}"
    );
}

fn check_after_kill(dir: &Path, rep: &Reported) {
    let clock = ManualClock::new(T0);
    let mut store = open_at(dir, &key(1), &clock, &policy());
    store.integrity_check().unwrap();
    let raw_check: String = raw(dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(raw_check, "ok");
    let v = store.verify_audit().unwrap();
    assert!(v.is_intact(), "audit chain after kill: {v:?}");
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert!(load.failures.is_empty(), "{:?}", load.failures);
    let g = store.gallery().unwrap();
    for (name, id) in &rep.enrolled {
        let s = SubjectId::new(name.clone()).unwrap();
        let present = g.templates_of(&s);
        if rep.deleted.contains(name) {
            assert!(
                present.is_empty(),
                "{name} was reported deleted but is present"
            );
        } else if rep.deleting.contains(name) {
            // Killed mid-deletion: all or nothing.
            assert!(present.is_empty() || present == [facegate_types::TemplateId(*id)]);
        } else {
            assert_eq!(
                present,
                [facegate_types::TemplateId(*id)],
                "{name}: committed enrollment lost"
            );
        }
    }
    // No template without its key, no key without its subject.
    let c = raw(dir);
    let orphans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM templates t WHERE NOT EXISTS
                 (SELECT 1 FROM subject_keys k WHERE k.subject_id = t.subject_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let fk: i64 = c
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
}

/// Child role: open a read-only database as an unprivileged user.
#[test]
fn child_read_only() {
    let Some(dir) = std::env::var_os(RO_CHILD_DIR) else {
        return;
    };
    // SAFETY: plain syscalls; this process only runs this one test.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    let dir = Path::new(&dir);
    let clock = ManualClock::new(T0);
    let policy = policy();
    let mut store = open_at(dir, &key(1), &clock, &policy);
    assert!(store.is_read_only());
    // Reads keep working.
    assert_eq!(store.list_subjects().unwrap().len(), 2);
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!((load.loaded, load.failures.len()), (2, 0));
    assert!(store.verify_audit().unwrap().is_intact());
    // Writes fail with an error naming the file.
    let c = consent(&policy, "carol", 30, T0);
    let err = store.enroll(&c, &[emb(3)], MODEL).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    let file = dir.join(DB_FILE_NAME);
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
    let err = store.withdraw(&withdrawal("alice", T0)).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
    // The gallery still serves.
    assert_eq!(store.gallery().unwrap().len(), 2);
    println!("READ-ONLY CHILD OK");
}

#[test]
fn read_only_database_serves_reads_and_names_the_file_on_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_with(dir.path(), &["alice", "bob"]);
    drop(store);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // The operator lets another user read this store: the database and the epoch its data keys
    // are wrapped under (both are needed, with the master key, to open a template).
    for f in [DB_FILE_NAME, "epoch.key"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o444))
            .unwrap();
    }
    let child = spawn_child(
        "faults::child_read_only",
        &[(RO_CHILD_DIR, dir.path().to_str().unwrap().to_owned())],
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("READ-ONLY CHILD OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn corrupted_page_is_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (store, clock, policy) = store_with(dir.path(), &refs);
    drop(store);
    let file = dir.path().join(DB_FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    let page = 4096;
    let mid = (bytes.len() / 2) / page * page;
    for b in &mut bytes[mid..mid + page] {
        *b = 0xA5;
    }
    std::fs::write(&file, &bytes).unwrap();

    // Either open refuses, or the first read of the damaged page does; both name the file.
    let err = match Store::open(dir.path(), &key(1), Arc::new(clock), &policy) {
        Err(e) => e,
        Ok(mut store) => match store.load_gallery(MODEL, DIM) {
            Err(e) => e,
            Ok(_) => store.integrity_check().unwrap_err(),
        },
    };
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
}

#[test]
fn key_file_with_loose_mode_or_wrong_owner_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let id = generate_key_file(&path).unwrap();
    assert_eq!(
        MasterKey::load(&KeySource::File(path.clone()))
            .unwrap()
            .id(),
        id
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::load(&KeySource::File(path.clone())).unwrap_err();
    assert!(
        matches!(err, StoreError::KeyFilePermissions { mode: 0o644, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("chmod 600 {}", path.display())),
        "{msg}"
    );
    assert!(msg.contains("0644"), "{msg}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Owned by someone else (possible to arrange only as root).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&path, Some(12345), None).unwrap();
        let err = MasterKey::load(&KeySource::File(path.clone())).unwrap_err();
        assert!(
            matches!(err, StoreError::KeyFileOwner { owner: 12345, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chown"), "{err}");
    }
    // A file that is no key.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = MasterKey::load(&KeySource::File(bad)).unwrap_err();
    assert!(matches!(err, StoreError::KeyFormat { .. }), "{err}");
    let _ = UnixMillis(0);
}

const FULL_CHILD_DIR: &str = "FACEGATE_STORE_TEST_FULL_DIR";

/// Child role: the disk "fills up" (a 1 KiB file size limit) in the middle of service.
#[test]
fn child_disk_full() {
    let Some(dir) = std::env::var_os(FULL_CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let clock = ManualClock::new(T0);
    let policy = policy();
    let mut store = open_at(dir, &key(1), &clock, &policy);
    store.load_gallery(MODEL, DIM).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process; SIGXFSZ ignored so a write past the limit fails
    // with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let small = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &small), 0);
    }
    let c = consent(&policy, "carol", 30, T0);
    let err = store.enroll(&c, &[emb(3)], MODEL).unwrap_err();
    let file = dir.join(DB_FILE_NAME);
    assert!(
        matches!(err, StoreError::DiskIo { .. } | StoreError::DiskFull { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
    println!("error shown: {err}");
    // Still serving: reads, the gallery, no half-written enrollment.
    assert_eq!(store.list_subjects().unwrap().len(), 2);
    assert_eq!(store.gallery().unwrap().len(), 2);
    assert!(store.subject(&sid("carol")).unwrap().is_none());
    // Space comes back: writes work again without a restart.
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0);
    }
    store.enroll(&c, &[emb(3)], MODEL).unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
    println!("DISK-FULL CHILD OK");
}

#[test]
fn full_disk_is_a_clear_error_and_committed_rows_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, policy) = store_with(dir.path(), &["alice", "bob"]);
    drop(store);
    let child = spawn_child(
        "faults::child_disk_full",
        &[(FULL_CHILD_DIR, dir.path().to_str().unwrap().to_owned())],
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(i) = stdout.find("error shown") {
        eprintln!("{}", stdout[i..].lines().next().unwrap_or(""));
    }
    assert!(
        out.status.success() && stdout.contains("DISK-FULL CHILD OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut store = open_at(dir.path(), &key(1), &clock, &policy);
    store.integrity_check().unwrap();
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!((load.loaded, load.failures.len()), (3, 0));
}
