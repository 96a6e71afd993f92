//! The record guarantees of issue 8, each as the failing scenario it was: a store that is
//! silently recreated, two processes initialising at once, files readable by others, a tail of
//! the audit chain cut off (with or without an older head put back), and the credential
//! register standing apart from face consent.

use std::os::unix::fs::PermissionsExt;

use facegate_policy::CredentialKind;
use facegate_store::{AuditEvent, AuditKind, BreakKind, CredentialCheck, Store, StoreError};

use crate::common::*;

#[test]
fn a_lost_database_is_an_error_not_a_new_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, policy) = store_with(dir.path(), &["a", "b"]);
    drop(store);
    let db = dir.path().join(facegate_store::DB_FILE_NAME);
    for how in ["zero bytes", "deleted"] {
        if how == "deleted" {
            std::fs::remove_file(&db).unwrap();
        } else {
            std::fs::write(&db, b"").unwrap();
        }
        let _ = std::fs::remove_file(dir.path().join("facegate.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("facegate.db-shm"));
        let err = Store::open(
            dir.path(),
            &key(1),
            std::sync::Arc::new(clock.clone()),
            &policy,
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::StoreMissing { .. }),
            "{how}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("refusing to start a new, empty store") && text.contains("facegate.db"),
            "{text}"
        );
    }
}

#[test]
fn concurrent_first_opens_make_one_store_with_one_chain() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let policy = policy();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (dir, policy, barrier) =
                    (dir.path().to_owned(), policy.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let clock = facegate_types::ManualClock::new(T0);
                    barrier.wait();
                    let mut s = open_at(&dir, &key(1), &clock, &policy);
                    s.record(AuditEvent::new(
                        AuditKind::ConfigChange,
                        format!("p{i}"),
                        "ok",
                    ))
                    .unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().expect("every concurrent open succeeds");
        }
        let clock = facegate_types::ManualClock::new(T0);
        let s = open_at(dir.path(), &key(1), &clock, &policy);
        let v = s.verify_audit().unwrap();
        assert!(v.is_intact(), "round {round}: {:?}", v.first_break);
        let created = s
            .audit_records(0, 100)
            .unwrap()
            .iter()
            .filter(|r| r.kind == "store_lifecycle")
            .count();
        assert_eq!(created, 1, "round {round}: one store created");
        // Created, first epoch, notice recorded, one record per process.
        assert_eq!(v.records, 6, "round {round}");
    }
}

#[test]
fn files_are_private_in_a_world_readable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut store, _, _) = store_with(&state, &["a"]);
    store
        .record(AuditEvent::new(AuditKind::ConfigChange, "op", "ok"))
        .unwrap();
    for entry in std::fs::read_dir(&state).unwrap() {
        let e = entry.unwrap();
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", e.file_name());
    }
    // An existing database left 0644 by someone is tightened at the next open.
    drop(store);
    let db = state.join(facegate_store::DB_FILE_NAME);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let clock = facegate_types::ManualClock::new(T0);
    let _s = open_at(&state, &key(1), &clock, &policy());
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_cut_tail_with_an_older_head_put_back_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["a", "b", "c"]);
    let head_setting = |dir: &std::path::Path| -> String {
        raw(dir)
            .query_row(
                "SELECT value FROM settings WHERE key = 'audit_head'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let cut_at = store.verify_audit().unwrap().last_seq.unwrap();
    // What an older copy of the database holds: the head marker at `cut_at`.
    let old_head = head_setting(dir.path());
    for i in 0..3 {
        store
            .record(
                AuditEvent::new(AuditKind::Identify, "gate", "match")
                    .details(serde_json::json!({ "i": i })),
            )
            .unwrap();
    }
    let last = store.verify_audit().unwrap().last_seq.unwrap();
    // Delete the tail and put the older head marker back: the chain inside the database is
    // consistent again; only the head kept beside it can tell.
    let c = unguard(dir.path());
    c.execute("DELETE FROM audit WHERE seq > ?1", [cut_at as i64])
        .unwrap();
    c.execute(
        "UPDATE settings SET value = ?1 WHERE key = 'audit_head'",
        [&old_head],
    )
    .unwrap();
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(
        (b.seq, b.kind.clone()),
        (
            cut_at,
            BreakKind::Truncated {
                expected_last: last
            }
        ),
        "{b}"
    );
}

#[test]
fn a_cut_tail_is_found_after_the_service_wrote_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["a", "b"]);
    for _ in 0..3 {
        store
            .record(AuditEvent::new(AuditKind::Identify, "gate", "match"))
            .unwrap();
    }
    let last = store.verify_audit().unwrap().last_seq.unwrap();
    let c = unguard(dir.path());
    c.execute("DELETE FROM audit WHERE seq > ?1", [(last - 2) as i64])
        .unwrap();
    drop(c);
    // The gate decides on: the next records take the cut sequence numbers, and the chain in
    // the database is whole again.
    for _ in 0..3 {
        store
            .record(AuditEvent::new(AuditKind::Identify, "gate", "unknown"))
            .unwrap();
    }
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(
        (b.seq, b.kind.clone()),
        (last, BreakKind::RolledBack),
        "{b}"
    );
    assert!(b.to_string().contains("rolled back"), "{b}");
}

#[test]
fn an_older_copy_of_the_database_put_back_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &["a", "b"]);
    drop(store);
    // A copy of the whole database at this point (what a backup or an attacker keeps).
    let copy = tempfile::tempdir().unwrap();
    for f in ["facegate.db", "facegate.db-wal"] {
        let _ = std::fs::copy(dir.path().join(f), copy.path().join(f));
    }
    store = open_at(dir.path(), &key(1), &clock, &policy);
    store
        .enroll(&consent(&policy, "c", 30, T0), &[emb(9)], MODEL)
        .unwrap();
    let v = store.verify_audit().unwrap();
    assert!(v.is_intact());
    drop(store);
    // Put the older copy back (its own chain is valid, its in-database head consistent).
    for f in ["facegate.db", "facegate.db-wal", "facegate.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
        if copy.path().join(f).exists() {
            std::fs::copy(copy.path().join(f), dir.path().join(f)).unwrap();
        }
    }
    let store = open_at(dir.path(), &key(1), &clock, &policy);
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert!(matches!(b.kind, BreakKind::Truncated { .. }), "{b}");
    assert!(b.to_string().contains("were removed"), "{b}");
    // Removing the head file too is no way out.
    drop(store);
    std::fs::remove_file(dir.path().join("audit.head")).unwrap();
    let store = open_at(dir.path(), &key(1), &clock, &policy);
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(b.kind, BreakKind::HeadFileTampered, "{b}");
}

#[test]
fn credentials_are_hashed_live_for_one_holder_and_expire_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a"]);
    // A holder with no face consent at all.
    let info = store
        .issue_credential(&sid("nofacer"), CredentialKind::Pin, "204060", "", "op")
        .unwrap();
    assert!(matches!(
        store.check_credential(CredentialKind::Pin, " 204060 ").unwrap(),
        CredentialCheck::Valid(i) if i.holder == sid("nofacer")
    ));
    assert_eq!(
        store
            .check_credential(CredentialKind::Card, "204060")
            .unwrap(),
        CredentialCheck::Unknown
    );
    assert!(
        !contains(&db_bytes(dir.path()), b"204060"),
        "a PIN in clear"
    );
    let err = store
        .issue_credential(&sid("a"), CredentialKind::Pin, "204060", "", "op")
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::CredentialInUse {
                same_holder: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        store
            .issue_credential(&sid("a"), CredentialKind::Pin, "12", "", "op")
            .unwrap_err()
            .to_string()
            .contains("4 to 12 digits")
    );
    // Expiry: a year after issue it no longer opens, and the sweep removes it.
    clock.advance_ms(366 * 86_400_000);
    assert!(matches!(
        store
            .check_credential(CredentialKind::Pin, "204060")
            .unwrap(),
        CredentialCheck::NotLive(_)
    ));
    let r = store.sweep_expired().unwrap();
    assert_eq!(r.credentials_deleted, 1);
    assert_eq!(
        store
            .check_credential(CredentialKind::Pin, "204060")
            .unwrap(),
        CredentialCheck::Unknown
    );
    assert!(
        store
            .list_credentials(None)
            .unwrap()
            .iter()
            .all(|c| c.id != info.id)
    );
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn a_clock_set_back_neither_reverses_audit_time_nor_revives_a_consent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a"]);
    // A year and a day on, a's consent has expired; the sweep deletes the template.
    clock.advance_ms(366 * 86_400_000);
    let late = clock_now(&clock);
    assert_eq!(store.sweep_expired().unwrap().templates_deleted, 1);
    // Somebody sets the clock back by a year.
    clock.set(facegate_types::UnixMillis(late.0 - 365 * 86_400_000));
    assert!(store.clock_behind().unwrap() >= 365 * 86_400_000 - 1);
    assert_eq!(
        store.now(),
        late,
        "the store's time never runs behind its record"
    );
    store
        .record(AuditEvent::new(AuditKind::ConfigChange, "op", "ok"))
        .unwrap();
    let recs = store.audit_records(0, 1000).unwrap();
    assert!(
        recs.windows(2).all(|w| w[0].at <= w[1].at),
        "audit times run backwards"
    );
    assert!(
        store.live_consent(&sid("a")).unwrap().is_none(),
        "an expired consent revived"
    );
    // A fresh open sees it too.
    drop(store);
    let store = open_at(dir.path(), &key(1), &clock, &policy());
    assert!(store.clock_behind().is_some());
}

#[test]
fn the_filing_alert_is_pushed_and_recorded_once_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw: facegate_policy::RawPolicyConfig =
        toml::from_str(facegate_policy::EXAMPLE_TOML).unwrap();
    raw.filing.warn_fraction = 0.00002;
    let policy = facegate_policy::PolicyConfig::from_raw(raw).unwrap();
    let clock = facegate_types::ManualClock::new(T0);
    let mut store = open_at(dir.path(), &key(1), &clock, &policy);
    store
        .enroll(&consent(&policy, "a", 30, T0), &[emb(1)], MODEL)
        .unwrap();
    let (n, status) = store.check_filing().unwrap();
    assert_eq!(
        (n, status.is_alert()),
        (1, false),
        "1 of 100,000 is below 0.002 %"
    );
    store
        .enroll(&consent(&policy, "b", 30, T0), &[emb(2)], MODEL)
        .unwrap();
    for _ in 0..3 {
        let (n, status) = store.check_filing().unwrap();
        assert_eq!((n, status.is_alert()), (2, true));
    }
    let alerts = |s: &Store| {
        s.audit_records(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "alert" && r.details.contains("filing_threshold_near"))
            .count()
    };
    assert_eq!(alerts(&store), 1, "once per day");
    clock.advance_ms(86_400_000);
    store.check_filing().unwrap();
    assert_eq!(alerts(&store), 2);
}

fn clock_now(c: &facegate_types::ManualClock) -> facegate_types::UnixMillis {
    use facegate_types::Clock;
    c.now()
}

#[test]
fn an_edited_ledger_row_is_refused_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["a", "b"]);
    assert!(store.live_consent(&sid("a")).unwrap().is_some());
    // Move a's grant (and expiry) nine years into the future, in the row and its record.
    let c = raw(dir.path());
    let (id, rec): (i64, String) = c
        .query_row(
            "SELECT id, record FROM consents WHERE subject_id = 'a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let later = T0.0 + 9 * 365 * 86_400_000;
    let rec = rec.replace(&T0.0.to_string(), &later.to_string());
    c.execute(
        "UPDATE consents SET record = ?2, granted_at = ?3, expires_at = ?4 WHERE id = ?1",
        rusqlite::params![id, rec, later, later + 365 * 86_400_000],
    )
    .unwrap();
    assert!(matches!(
        store.consent_status(&sid("a")).unwrap(),
        facegate_store::ConsentStatus::Tampered { .. }
    ));
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!((load.loaded, load.not_matchable), (1, 1));
    assert!(store.gallery().unwrap().templates_of(&sid("a")).is_empty());
}

#[test]
fn rows_of_a_withdrawn_person_restored_from_a_copy_do_not_identify_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a", "b"]);
    // Keep a's rows as an older copy would hold them.
    let c = raw(dir.path());
    c.execute_batch(
        "CREATE TABLE keep_c AS SELECT * FROM consents WHERE subject_id = 'a';
         CREATE TABLE keep_t AS SELECT * FROM templates WHERE subject_id = 'a';
         CREATE TABLE keep_k AS SELECT * FROM subject_keys WHERE subject_id = 'a';",
    )
    .unwrap();
    clock.advance_ms(1000);
    store.withdraw(&withdrawal("a", clock_now(&clock))).unwrap();
    // Put them back under the live master key.
    c.execute_batch(
        "UPDATE subjects SET withdrawn_at = NULL WHERE id = 'a';
         INSERT INTO consents SELECT * FROM keep_c WHERE id NOT IN (SELECT id FROM consents);
         UPDATE consents SET withdrawn_at = NULL, withdrawal = NULL,
                mac = (SELECT mac FROM keep_c WHERE keep_c.id = consents.id)
             WHERE subject_id = 'a';
         INSERT INTO subject_keys SELECT * FROM keep_k;
         INSERT INTO templates SELECT * FROM keep_t;",
    )
    .unwrap();
    assert!(matches!(
        store.consent_status(&sid("a")).unwrap(),
        facegate_store::ConsentStatus::WithdrawnInRecord
    ));
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(load.loaded, 1, "only b");
    assert!(store.gallery().unwrap().templates_of(&sid("a")).is_empty());
}

#[test]
fn templates_of_another_purpose_are_never_matched_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, _) = store_with(dir.path(), &["a", "b"]);
    drop(store);
    let mut raw_policy: facegate_policy::RawPolicyConfig =
        toml::from_str(facegate_policy::EXAMPLE_TOML).unwrap();
    raw_policy.deployment.purpose = facegate_policy::Purpose::Attendance;
    raw_policy.notice.version = 2; // a purpose change is a notice change (Art. 5)
    let attendance = facegate_policy::PolicyConfig::from_raw(raw_policy).unwrap();
    let mut store = open_at(dir.path(), &key(1), &clock, &attendance);
    assert!(matches!(
        store.consent_status(&sid("a")).unwrap(),
        facegate_store::ConsentStatus::OtherPurpose { .. }
    ));
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(
        (load.loaded, load.not_matchable, load.failures.len()),
        (0, 2, 0)
    );
    let listed = store.other_purpose_templates().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].1, "access_control");
}

#[test]
fn a_notice_text_changed_without_a_version_bump_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, _) = store_with(dir.path(), &["a"]);
    drop(store);
    let mut raw_policy: facegate_policy::RawPolicyConfig =
        toml::from_str(facegate_policy::EXAMPLE_TOML).unwrap();
    raw_policy
        .notice
        .texts
        .insert("en".into(), "A quietly different notice text.".into());
    let changed = facegate_policy::PolicyConfig::from_raw(raw_policy.clone()).unwrap();
    let err = Store::open(
        dir.path(),
        &key(1),
        std::sync::Arc::new(clock.clone()),
        &changed,
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Notice { .. }), "{err}");
    assert!(err.to_string().contains("version"), "{err}");
    // With the version bumped it opens, records the change, and lists who must be told.
    raw_policy.notice.version = 2;
    let bumped = facegate_policy::PolicyConfig::from_raw(raw_policy).unwrap();
    let store = open_at(dir.path(), &key(1), &clock, &bumped);
    assert_eq!(store.pending_notice().unwrap(), vec![(sid("a"), 1)]);
    assert!(
        store
            .audit_records(0, 1000)
            .unwrap()
            .iter()
            .any(|r| r.kind == "config_change" && r.details.contains("\"previous_version\":1"))
    );
    // Going back to version 1 is refused too.
    drop(store);
    let err = Store::open(
        dir.path(),
        &key(1),
        std::sync::Arc::new(clock.clone()),
        &policy(),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Notice { .. }), "{err}");
}

#[test]
fn withdrawal_under_a_long_reader_says_so_and_clears_the_files_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a", "b"]);
    let (wrapped, sealed): (Vec<u8>, Vec<u8>) = raw(dir.path())
        .query_row(
            "SELECT k.wrapped, t.sealed FROM subject_keys k JOIN templates t USING (subject_id)
             WHERE subject_id = 'a'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // A copy taken before the withdrawal, with everything beside it.
    let copy = tempfile::tempdir().unwrap();
    let _ = store.clear_residue(std::time::Duration::from_secs(5));
    std::fs::copy(
        dir.path().join("facegate.db"),
        copy.path().join("facegate.db"),
    )
    .unwrap();
    // Another process holds a read transaction (an old snapshot) for a long time.
    let reader = raw(dir.path());
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM templates", [], |r| r.get(0))
        .unwrap();
    clock.advance_ms(1000);
    let started = std::time::Instant::now();
    let report = store.withdraw(&withdrawal("a", clock_now(&clock))).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the withdrawal must not wait out the busy timeout"
    );
    assert_eq!(report.templates_deleted, 1);
    assert!(report.copies_sealed);
    assert!(
        !report.residue_cleared,
        "the reader still sees the old pages"
    );
    assert!(!store.clear_residue(std::time::Duration::from_millis(300)));
    // The reader ends: the residue goes.
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    assert!(store.clear_residue(std::time::Duration::from_secs(10)));
    let files = db_bytes(dir.path());
    assert!(!contains(&files, &wrapped), "wrapped key left in the files");
    assert!(
        !contains(&files, &sealed[..32]),
        "ciphertext left in the files"
    );
    // And the copy from before is useless for a, even next to the live epoch and master key.
    for f in ["epoch.key", "store.id"] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
    }
    let err = Store::open(
        copy.path(),
        &key(1),
        std::sync::Arc::new(clock.clone()),
        &policy(),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::EpochMismatch { .. }), "{err}");
}

#[test]
fn a_card_number_comes_back_sealed_only_for_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a"]);
    // No card yet, and a PIN is never a card number.
    assert_eq!(store.card_number(&sid("a")).unwrap(), None);
    store
        .issue_credential(&sid("a"), CredentialKind::Pin, "314159", "", "op")
        .unwrap();
    assert_eq!(store.card_number(&sid("a")).unwrap(), None);
    store
        .issue_credential(&sid("a"), CredentialKind::Card, "12345", "old", "op")
        .unwrap();
    let newer = store
        .issue_credential(&sid("a"), CredentialKind::Card, " 54321 ", "new", "op")
        .unwrap();
    assert_eq!(
        store.card_number(&sid("a")).unwrap().as_deref(),
        Some("54321")
    );
    assert_eq!(store.card_number(&sid("nobody")).unwrap(), None);
    assert!(
        !contains(&db_bytes(dir.path()), b"54321") && !contains(&db_bytes(dir.path()), b"12345"),
        "a card number in clear"
    );
    // Revoking the newer card brings the older one back; expiry removes both.
    store
        .revoke_credentials(&sid("a"), Some(newer.id), None, "op", "lost")
        .unwrap();
    assert_eq!(
        store.card_number(&sid("a")).unwrap().as_deref(),
        Some("12345")
    );
    // A sealed number moved onto another holder does not open for them.
    raw(dir.path())
        .execute(
            "UPDATE credentials SET holder = 'b' WHERE label = 'old'",
            [],
        )
        .unwrap();
    let err = store.card_number(&sid("b")).unwrap_err().to_string();
    assert!(
        err.contains("sealed card number that does not open"),
        "{err}"
    );
    raw(dir.path())
        .execute(
            "UPDATE credentials SET holder = 'a' WHERE label = 'old'",
            [],
        )
        .unwrap();
    clock.advance_ms(366 * 86_400_000);
    assert_eq!(store.card_number(&sid("a")).unwrap(), None);
}
