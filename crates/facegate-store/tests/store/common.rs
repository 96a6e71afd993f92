//! Shared helpers: policies built from the example TOML, consents, embeddings, stores.

use std::path::Path;
use std::sync::Arc;

use facegate_policy::{
    Consent, ConsentMethod, ConsentRecord, EXAMPLE_TOML, Guardian, GuardianRelation, PolicyConfig,
    RawPolicyConfig, Withdrawal,
};
use facegate_store::{MasterKey, Store};
use facegate_types::{Embedding, ManualClock, SubjectId, UnixMillis};

/// 2025-07-01T00:00:00Z.
pub const T0: UnixMillis = UnixMillis(1_751_328_000_000);
pub const MODEL: &str = "arcface-r50:v1";
pub const DIM: usize = 64;

/// The example policy with the given retention (days for adults, for minors), under a notice
/// version higher than any before in this test binary: people are told the retention (Art. 5),
/// so every policy change is a new notice version, and versions only go up.
pub fn policy_with(days: u32, minor_days: Option<u32>) -> PolicyConfig {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(2);
    let mut raw: RawPolicyConfig = toml::from_str(EXAMPLE_TOML).unwrap();
    raw.retention.days = days;
    raw.retention.minor_days = minor_days;
    raw.notice.version = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PolicyConfig::from_raw(raw).unwrap()
}

/// The example policy as it ships (notice version 1, 365/180 days).
pub fn policy() -> PolicyConfig {
    let mut raw: RawPolicyConfig = toml::from_str(EXAMPLE_TOML).unwrap();
    raw.retention.days = 365;
    raw.retention.minor_days = Some(180);
    PolicyConfig::from_raw(raw).unwrap()
}

pub fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

pub fn sid(s: &str) -> SubjectId {
    SubjectId::new(s).unwrap()
}

pub fn record(policy: &PolicyConfig, subject: &str, age: u8, at: UnixMillis) -> ConsentRecord {
    ConsentRecord {
        subject: sid(subject),
        age_years: age,
        purpose: policy.purpose(),
        notice_version: policy.notice().version(),
        method: ConsentMethod::Terminal,
        operator: "op-7".to_owned(),
        guardian: (age < 14).then(|| Guardian {
            identity: "guardian-doc-1".to_owned(),
            relation: GuardianRelation::Parent,
        }),
        granted_at: at,
    }
}

pub fn consent(policy: &PolicyConfig, subject: &str, age: u8, at: UnixMillis) -> Consent {
    policy.grant(record(policy, subject, age, at), at).unwrap()
}

pub fn withdrawal(subject: &str, at: UnixMillis) -> Withdrawal {
    Withdrawal {
        subject: sid(subject),
        at,
        operator: "op-7".to_owned(),
        method: ConsentMethod::Written,
    }
}

/// A deterministic unit vector.
pub fn emb(seed: u64) -> Embedding {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v = (0..DIM)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    Embedding::from_raw(v).unwrap()
}

pub fn open_at(dir: &Path, key: &MasterKey, clock: &ManualClock, policy: &PolicyConfig) -> Store {
    Store::open(dir, key, Arc::new(clock.clone()), policy).unwrap()
}

/// A store in `dir` with subjects `names` enrolled (one template each, seed = index + 1).
pub fn store_with(dir: &Path, names: &[&str]) -> (Store, ManualClock, PolicyConfig) {
    let clock = ManualClock::new(T0);
    let policy = policy();
    let mut store = open_at(dir, &key(1), &clock, &policy);
    for (i, n) in names.iter().enumerate() {
        let c = consent(&policy, n, 30, T0);
        store.enroll(&c, &[emb(i as u64 + 1)], MODEL).unwrap();
    }
    (store, clock, policy)
}

/// Does `needle` occur anywhere in `hay`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The database file plus its -wal, if any.
pub fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut all = std::fs::read(dir.join(facegate_store::DB_FILE_NAME)).unwrap();
    if let Ok(wal) = std::fs::read(dir.join(format!("{}-wal", facegate_store::DB_FILE_NAME))) {
        all.extend_from_slice(&wal);
    }
    all
}

/// Raw read access to the database, bypassing the store.
pub fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(facegate_store::DB_FILE_NAME)).unwrap()
}

/// Raw access with the audit table's guard triggers dropped: what someone editing the file
/// can do.
pub fn unguard(dir: &Path) -> rusqlite::Connection {
    let c = raw(dir);
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_prune_only;")
        .unwrap();
    c
}
