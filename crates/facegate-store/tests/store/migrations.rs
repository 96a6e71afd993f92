//! Schema migrations: a version-1 database made from the version-1 SQL, holding real data,
//! opens under the current build, is migrated, and keeps every row readable.

use std::sync::Arc;

use facegate_store::schema::{self, MIGRATIONS, SCHEMA_VERSION};
use facegate_store::{DB_FILE_NAME, SearchMode, Store, StoreError};

use crate::common::*;

/// The v1 columns of each table (everything v1 has; later versions only add).
const V1_TABLES: &[(&str, &str)] = &[
    ("settings", "key, value"),
    ("subjects", "id, age_years, created_at"),
    ("subject_keys", "subject_id, nonce, wrapped, created_at"),
    (
        "consents",
        "id, subject_id, record, granted_at, expires_at, withdrawn_at, withdrawal",
    ),
    (
        "templates",
        "id, subject_id, consent_id, model_id, dim, seal_version, nonce, sealed, created_at, expires_at",
    ),
    (
        "audit",
        "seq, at, kind, subject_id, operator, outcome, details, prev_mac, mac",
    ),
];

#[test]
fn v1_database_migrates_with_data_intact() {
    // Real data, written by the current store.
    let source = tempfile::tempdir().unwrap();
    let (store, clock, policy) = store_with(source.path(), &["alice", "bob"]);
    let before = store.verify_audit().unwrap();
    drop(store);

    // A v1 database made from the v1 SQL alone, filled with the v1 columns of that data.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DB_FILE_NAME);
    {
        let mut c = rusqlite::Connection::open(&file).unwrap();
        schema::migrate_to(&mut c, &file, 1).unwrap();
        assert_eq!(schema::user_version(&c, &file).unwrap(), 1);
        c.execute(
            "ATTACH DATABASE ?1 AS src",
            [source.path().join(DB_FILE_NAME).to_str().unwrap()],
        )
        .unwrap();
        for (table, cols) in V1_TABLES {
            c.execute_batch(&format!(
                "INSERT INTO main.{table} ({cols}) SELECT {cols} FROM src.{table};"
            ))
            .unwrap();
        }
        c.execute_batch("DETACH DATABASE src;").unwrap();
        // v1 has no withdrawal column on subjects and no audit triggers.
        let has_col: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('subjects') WHERE name = 'withdrawn_at'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(has_col, 0);
    }

    // The data keys copied in are wrapped under the source store's epoch.
    std::fs::copy(
        source.path().join("epoch.key"),
        dir.path().join("epoch.key"),
    )
    .unwrap();
    let mut store = Store::open(dir.path(), &key(1), Arc::new(clock.clone()), &policy).unwrap();
    let c = raw(dir.path());
    assert_eq!(schema::user_version(&c, &file).unwrap(), SCHEMA_VERSION);
    // Data intact: subjects, consents, templates open, the chain verifies and records the step.
    let subjects: Vec<_> = store
        .list_subjects()
        .unwrap()
        .into_iter()
        .map(|s| (s.subject.to_string(), s.templates, s.has_key))
        .collect();
    assert_eq!(
        subjects,
        vec![("alice".into(), 1, true), ("bob".into(), 1, true)]
    );
    let load = store.load_gallery(MODEL, DIM).unwrap();
    assert_eq!((load.loaded, load.failures.len()), (2, 0));
    let hit = store
        .gallery()
        .unwrap()
        .identify(&emb(2), 1, SearchMode::Exact)
        .unwrap();
    assert_eq!(hit.hits[0].subject, sid("bob"));
    let v = store.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.records, before.records + 1);
    let last = store.audit_records(v.last_seq.unwrap(), 1).unwrap();
    assert_eq!(last[0].kind, "store_lifecycle");
    assert!(last[0].details.contains("\"migrated_from\":1"));
    // New-version features work on the migrated data.
    let r = store
        .withdraw(&withdrawal("alice", T0.plus_days(1)))
        .unwrap();
    assert_eq!(r.templates_deleted, 1);
    assert!(store.verify_audit().unwrap().is_intact());
    assert_eq!(MIGRATIONS.len() as u32, SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(DB_FILE_NAME);
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let clock = facegate_types::ManualClock::new(T0);
    let err = Store::open(dir.path(), &key(1), Arc::new(clock), &policy()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains(file.to_str().unwrap()));
}
