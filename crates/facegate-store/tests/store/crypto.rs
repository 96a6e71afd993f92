//! Sealing, keys and tampering: nothing in clear, wrong key, tampered and moved rows,
//! crypto-shredding and master key rotation.

use std::sync::Arc;

use facegate_store::{SearchMode, Store, StoreError};

use crate::common::*;

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn templates_are_never_on_disk_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["alice", "bob", "carol"]);
    let loaded = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(loaded.loaded, 3);
    assert!(loaded.failures.is_empty());
    let hit = store
        .gallery()
        .unwrap()
        .identify(&emb(2), 1, SearchMode::Exact)
        .unwrap();
    assert_eq!(hit.hits[0].subject, sid("bob"));
    assert!((hit.hits[0].score - 1.0).abs() < 1e-5);
    let bytes = db_bytes(dir.path());
    for seed in 1..=3 {
        let e = emb(seed);
        // No 4-value run of any template appears in the file or the WAL.
        for chunk in e.as_slice().chunks(4) {
            assert!(
                !contains(&bytes, &le_bytes(chunk)),
                "template {seed} found in clear"
            );
        }
    }
    drop(store);
    let bytes = db_bytes(dir.path());
    assert!(!contains(&bytes, &le_bytes(&emb(1).as_slice()[..4])));
}

#[test]
fn wrong_master_key_names_both_key_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, policy) = store_with(dir.path(), &["alice"]);
    drop(store);
    let err = Store::open(dir.path(), &key(2), Arc::new(clock), &policy).unwrap_err();
    let (expected, got) = (key(1).id().to_string(), key(2).id().to_string());
    assert!(
        matches!(&err, StoreError::WrongMasterKey { expected: e, got: g } if *e == expected && *g == got),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!(
        "wrong master key (expected key id {expected}, got {got})"
    )));
}

#[test]
fn tampered_row_names_template_and_subject_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["alice", "bob", "carol"]);
    let bob_t = store.subject(&sid("bob")).unwrap().unwrap().templates[0].template;
    {
        let c = raw(dir.path());
        let mut sealed: Vec<u8> = c
            .query_row(
                "SELECT sealed FROM templates WHERE id = ?1",
                [bob_t.0 as i64],
                |r| r.get(0),
            )
            .unwrap();
        sealed[10] ^= 0x01;
        c.execute(
            "UPDATE templates SET sealed = ?1 WHERE id = ?2",
            rusqlite::params![sealed, bob_t.0 as i64],
        )
        .unwrap();
    }
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(load.loaded, 2, "alice and carol still load");
    assert_eq!(load.failures.len(), 1);
    let err = &load.failures[0];
    assert!(
        matches!(err, StoreError::TemplateOpen { template, subject, .. } if *template == bob_t && *subject == sid("bob")),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&bob_t.to_string()) && msg.contains("bob"),
        "{msg}"
    );
    let g = store.gallery().unwrap();
    assert!(g.templates_of(&sid("bob")).is_empty());
    assert_eq!(g.templates_of(&sid("alice")).len(), 1);
    // The failure is recorded as an alert, and the chain still verifies.
    let counts = store.audit_counts().unwrap();
    assert_eq!(counts.get("alert"), Some(&1));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn row_moved_to_another_subject_or_model_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["alice", "bob"]);
    let alice_t = store.subject(&sid("alice")).unwrap().unwrap().templates[0].template;
    let bob_t = store.subject(&sid("bob")).unwrap().unwrap().templates[0].template;
    let c = raw(dir.path());
    // Alice's sealed template relabelled as Bob's (Bob has a data key, so the key opens).
    c.execute(
        "UPDATE templates SET subject_id = 'bob' WHERE id = ?1",
        [alice_t.0 as i64],
    )
    .unwrap();
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(load.loaded, 1);
    assert!(
        matches!(&load.failures[..], [StoreError::TemplateOpen { template, subject, .. }] if *template == alice_t && *subject == sid("bob")),
        "{:?}",
        load.failures
    );
    // Bob's template swapped to another model id.
    c.execute(
        "UPDATE templates SET model_id = 'other-model' WHERE id = ?1",
        [bob_t.0 as i64],
    )
    .unwrap();
    let load = store.load_gallery("other-model", DIM).unwrap();
    assert_eq!(load.loaded, 0);
    assert!(
        matches!(&load.failures[..], [StoreError::TemplateOpen { template, model_id, .. }] if *template == bob_t && model_id == "other-model"),
        "{:?}",
        load.failures
    );
    // Sealed bytes copied between rows of the same subject (another template id) fail too.
    let c2 = consent(store.policy(), "carol", 40, T0);
    let t1 = store.enroll(&c2, &[emb(10)], MODEL).unwrap();
    let t2 = store.enroll(&c2, &[emb(11)], MODEL).unwrap();
    c.execute(
        "UPDATE templates SET (nonce, sealed) = (SELECT nonce, sealed FROM templates WHERE id = ?1)
         WHERE id = ?2",
        [t1.0 as i64, t2.0 as i64],
    )
    .unwrap();
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert!(
        load.failures
            .iter()
            .any(|e| matches!(e, StoreError::TemplateOpen { template, .. } if *template == t2))
    );
    assert!(store.gallery().unwrap().contains_template(t1));
}

/// Crypto-shredding: after deletion the subject's key is gone from the live database, so its
/// ciphertext, wherever it survives, no longer opens with the live database's keys. A byte copy
/// made *before* the deletion still holds the wrapped key: it is protected by the master key it
/// was made under, which is why rotation exists. This test pins down both halves.
#[test]
fn deletion_shreds_and_rotation_retires_old_copies() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let (store, clock, policy) = store_with(dir.path(), &["alice", "bob"]);
    let alice_t = store.subject(&sid("alice")).unwrap().unwrap().templates[0].template;
    drop(store); // checkpoints the WAL into the file
    std::fs::copy(
        dir.path().join(facegate_store::DB_FILE_NAME),
        backup.path().join(facegate_store::DB_FILE_NAME),
    )
    .unwrap();
    let (wrapped, sealed): (Vec<u8>, Vec<u8>) = raw(backup.path())
        .query_row(
            "SELECT k.wrapped, t.sealed FROM subject_keys k JOIN templates t USING (subject_id)
             WHERE subject_id = 'alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();

    let mut store = open_at(dir.path(), &key(1), &clock, &policy);
    let report = store
        .delete_subject(&sid("alice"), "op-7", "erasure request")
        .unwrap();
    assert_eq!(report.templates_deleted, 1);
    assert!(report.key_destroyed);

    // 1. Live database and WAL: neither the wrapped key nor the ciphertext remain.
    let live = db_bytes(dir.path());
    assert!(
        !contains(&live, &wrapped),
        "wrapped key left in the live file or WAL"
    );
    assert!(
        !contains(&live, &sealed[..32]),
        "ciphertext left in the live file or WAL"
    );

    // 2. The old ciphertext put back into the live database does not open: no key.
    raw(dir.path())
        .execute(
            "INSERT INTO subjects (id, age_years, created_at) VALUES ('alice', 30, 0);",
            [],
        )
        .unwrap();
    {
        let b = raw(backup.path());
        let row: (i64, i64, Vec<u8>, Vec<u8>, i64) = b
            .query_row(
                "SELECT consent_id, dim, nonce, sealed, expires_at FROM templates WHERE id = ?1",
                [alice_t.0 as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        let c = raw(dir.path());
        c.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
        c.execute(
            "INSERT INTO templates (id, subject_id, consent_id, model_id, dim, seal_version, nonce,
                                    sealed, created_at, expires_at)
             VALUES (?1, 'alice', ?2, ?3, ?4, 1, ?5, ?6, 0, ?7)",
            rusqlite::params![alice_t.0 as i64, row.0, MODEL, row.1, row.2, row.3, row.4],
        )
        .unwrap();
    }
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(load.loaded, 1, "bob only");
    assert!(
        matches!(&load.failures[..], [StoreError::NoSubjectKey { subject }] if *subject == sid("alice")),
        "{:?}",
        load.failures
    );

    // 3. The old copy no longer opens with the live master key: the deletion replaced the
    //    epoch its data keys are wrapped under, and the old epoch is gone.
    let err = Store::open(backup.path(), &key(1), Arc::new(clock.clone()), &policy).unwrap_err();
    assert!(matches!(err, StoreError::EpochMismatch { .. }), "{err}");
    // Not with the live epoch file beside it either.
    std::fs::copy(
        dir.path().join("epoch.key"),
        backup.path().join("epoch.key"),
    )
    .unwrap();
    let err = Store::open(backup.path(), &key(1), Arc::new(clock.clone()), &policy).unwrap_err();
    assert!(matches!(err, StoreError::EpochMismatch { .. }), "{err}");

    // 4. Rotation: the live database moves to a new key; the old copy needs the retired one.
    let r = store.rotate_master_key(&key(9), "op-7").unwrap();
    assert_eq!(r.keys_rewrapped, 1);
    assert_eq!(r.new_key_id, key(9).id());
    drop(store);
    let mut store = open_at(dir.path(), &key(9), &clock, &policy);
    let l = store.load_gallery(MODEL, DIM).unwrap();
    let bob_t = store.subject(&sid("bob")).unwrap().unwrap().templates[0].template;
    assert!(store.gallery().unwrap().contains_template(bob_t));
    assert_eq!(l.loaded, 1);
    assert!(store.verify_audit().unwrap().is_intact());
    assert!(matches!(
        Store::open(dir.path(), &key(1), Arc::new(clock.clone()), &policy),
        Err(StoreError::WrongMasterKey { .. })
    ));
    // With only the current key, the old copy is closed: destroying key(1) shreds Alice in it.
    let err = Store::open(backup.path(), &key(9), Arc::new(clock), &policy).unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err}");
}

#[test]
fn rotation_keeps_everyone_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &["a1", "a2", "a3", "a4"]);
    let before = store.verify_audit().unwrap();
    store.rotate_master_key(&key(3), "op-7").unwrap();
    // Still works in the same session (new enrollments use the new key).
    let c = consent(&policy, "a5", 25, T0);
    store.enroll(&c, &[emb(5)], MODEL).unwrap();
    drop(store);
    let mut store = Store::open(dir.path(), &key(3), Arc::new(clock.clone()), &policy).unwrap();
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!((load.loaded, load.failures.len()), (5, 0));
    let after = store.verify_audit().unwrap();
    assert!(after.is_intact());
    assert!(after.records > before.records);
    let rotations = store
        .audit_records(0, 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "key_rotation" && r.details.contains("new_key_id"))
        .count();
    assert_eq!(
        rotations, 1,
        "one master key rotation (epoch rotations aside)"
    );
}

/// A gallery load in which every row fails (here: read for the wrong dimension) writes one alert
/// whose size does not grow with the gallery: the first few failures and a count.
#[test]
fn gallery_load_alerts_have_a_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..80).map(|i| format!("emp-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut store, _, _) = store_with(dir.path(), &refs);
    let load = store.load_gallery(MODEL, DIM + 1).unwrap();
    assert_eq!((load.loaded, load.failures.len()), (0, 80));
    let records = store.audit_records(0, 10_000).unwrap();
    let alert = records.iter().rev().find(|r| r.kind == "alert").unwrap();
    let details: serde_json::Value = serde_json::from_str(&alert.details).unwrap();
    assert_eq!(details["failures"], 80);
    assert_eq!(
        details["gallery_load_failures"].as_array().unwrap().len(),
        facegate_store::ALERT_FAILURES_LISTED
    );
    assert!(alert.details.len() < 2048, "{} bytes", alert.details.len());
}

/// Switching the embedder (fp32 <-> int8, another model id) matches none of the old templates
/// and says so: the load reports the other model's live templates so the operator re-enrolls.
#[test]
fn a_gallery_of_another_model_reports_the_templates_it_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["alice", "bob"]);
    let int8 = "arcface-r100-faceplugin-int8:8c86add0c4d0";
    let load = store.load_gallery(int8, DIM).unwrap();
    assert_eq!(load.loaded, 0);
    assert_eq!(load.other_models, vec![(MODEL.to_string(), 2)]);
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!(load.loaded, 2);
    assert!(load.other_models.is_empty());
}
