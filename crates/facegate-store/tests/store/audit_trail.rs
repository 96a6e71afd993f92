//! The processing record through the store: every operation is chained, tampering with the
//! file is found and located, and pruning keeps 3 years and re-anchors.

use facegate_store::{AuditEvent, AuditKind, BreakKind, StoreError};
use facegate_types::UnixMillis;

use crate::common::*;

#[test]
fn editing_the_file_is_found_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["a", "b", "c"]);
    store
        .record(
            AuditEvent::new(AuditKind::Identify, "gate-1", "match")
                .subject(&sid("b"))
                .details(serde_json::json!({ "score": 0.81, "k": 5 })),
        )
        .unwrap();
    let v = store.verify_audit().unwrap();
    assert!(v.is_intact());
    let last = v.last_seq.unwrap();
    // The guard triggers stop ordinary SQL from editing the record.
    assert!(
        raw(dir.path())
            .execute(
                "UPDATE audit SET outcome = 'no_match' WHERE seq = ?1",
                [last as i64]
            )
            .is_err()
    );
    let c = unguard(dir.path());
    c.execute(
        "UPDATE audit SET outcome = 'no_match' WHERE seq = ?1",
        [last as i64],
    )
    .unwrap();
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!((b.seq, b.kind.clone()), (last, BreakKind::Edited));
    assert!(b.to_string().contains("edited"));
}

#[test]
fn removal_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = store_with(dir.path(), &["a", "b", "c"]);
    let c = unguard(dir.path());
    c.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    let b = store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!((b.seq, b.kind), (4, BreakKind::Removed));
}

#[test]
fn prune_keeps_three_years_and_reanchors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, _) = store_with(dir.path(), &["a", "b"]);
    let first = store.verify_audit().unwrap().records;
    clock.set(T0.plus_days(400));
    store
        .record(AuditEvent::new(
            AuditKind::AuthFailure,
            "admin-socket",
            "refused",
        ))
        .unwrap();
    // Two years on: nothing may go yet.
    clock.set(T0.plus_days(730));
    let err = store.prune_audit(T0.plus_days(1), "admin").unwrap_err();
    assert!(matches!(err, StoreError::AuditRetention { .. }), "{err}");
    assert!(err.to_string().contains("3 years"));
    // Four years on: the records of T0 go, the one of day 400 stays.
    clock.set(T0.plus_days(4 * 365));
    let cut = UnixMillis(T0.0 + 1);
    let r = store.prune_audit(cut, "admin").unwrap();
    assert_eq!(r.removed, first);
    let v = store.verify_audit().unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.anchor_seq, first);
    assert_eq!(v.records, 2, "the auth failure and the prune record");
    let recs = store.audit_records(0, 10).unwrap();
    assert_eq!(recs[0].kind, "auth_failure");
    assert_eq!(recs[1].kind, "audit_prune");
    // A broken chain is never pruned.
    let c = unguard(dir.path());
    c.execute(
        "UPDATE audit SET operator = 'x' WHERE seq = ?1",
        [recs[0].seq as i64],
    )
    .unwrap();
    clock.set(T0.plus_days(10 * 365));
    let err = store.prune_audit(T0.plus_days(500), "admin").unwrap_err();
    assert!(matches!(err, StoreError::AuditBroken { .. }), "{err}");
}
