//! Consent, enrollment, withdrawal, deletion and retention through the public API.

use facegate_store::{AuditKind, SearchMode, StoreError};
use facegate_types::UnixMillis;

use crate::common::*;

#[test]
fn enrollment_needs_a_live_consent_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &[]);
    store.load_gallery(MODEL, DIM).unwrap();
    let c = consent(&policy, "alice", 30, T0);
    let t = store.enroll(&c, &[emb(1), emb(2)], MODEL).unwrap();
    // In the gallery at once, as the fused (mean) template.
    let g = store.gallery().unwrap();
    assert_eq!(g.templates_of(&sid("alice")), &[t]);
    let score = g.verify(&sid("alice"), &emb(1)).unwrap().unwrap();
    assert!(score > 0.5 && score < 0.99, "{score}");

    let detail = store.subject(&sid("alice")).unwrap().unwrap();
    assert_eq!(detail.templates.len(), 1);
    assert_eq!(detail.templates[0].expires_at, T0.plus_days(365));
    assert_eq!(
        detail.consents.len(),
        1,
        "the same consent is recorded once"
    );
    assert!(detail.summary.has_key);

    // A year later the consent is no longer live: refused, and the refusal is recorded.
    clock.set(T0.plus_days(366));
    let err = store.enroll(&c, &[emb(3)], MODEL).unwrap_err();
    assert!(matches!(err, StoreError::ConsentNotLive { .. }), "{err}");
    assert!(err.to_string().contains("alice"));
    let refused = store
        .audit_records(0, 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "enroll" && r.outcome == "refused")
        .count();
    assert_eq!(refused, 1);
    let counts = store.audit_counts().unwrap();
    assert_eq!(counts.get("consent"), Some(&1));
    assert_eq!(counts.get("enroll"), Some(&2));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn withdrawal_deletes_at_once_and_blocks_the_old_consent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &["alice", "bob"]);
    store.load_gallery(MODEL, DIM).unwrap();
    let c = consent(&policy, "alice", 30, T0);
    store.enroll(&c, &[emb(7)], MODEL).unwrap();
    clock.advance_ms(60_000);
    let r = store
        .withdraw(&withdrawal("alice", clock_now(&clock)))
        .unwrap();
    assert_eq!(r.templates_deleted, 2);
    assert!(r.key_destroyed);
    let d = store.subject(&sid("alice")).unwrap().unwrap();
    assert!(d.templates.is_empty());
    assert!(!d.summary.has_key);
    assert!(d.consents.iter().all(|c| c.withdrawn_at.is_some()));
    assert!(
        store
            .gallery()
            .unwrap()
            .templates_of(&sid("alice"))
            .is_empty()
    );
    let id = store
        .gallery()
        .unwrap()
        .identify(&emb(1), 1, SearchMode::Exact)
        .unwrap();
    assert_eq!(id.hits[0].subject, sid("bob"));
    // The consent value granted before the withdrawal no longer enrolls.
    let err = store.enroll(&c, &[emb(8)], MODEL).unwrap_err();
    assert!(matches!(err, StoreError::ConsentWithdrawn { .. }), "{err}");
    assert!(store.live_consent(&sid("alice")).unwrap().is_none());
    // A new consent does.
    clock.advance_ms(60_000);
    let fresh = consent(&policy, "alice", 30, clock_now(&clock));
    store.enroll(&fresh, &[emb(9)], MODEL).unwrap();
    assert!(store.live_consent(&sid("alice")).unwrap().is_some());
    // Withdrawing an unknown subject is an error naming it.
    let err = store
        .withdraw(&withdrawal("nobody", clock_now(&clock)))
        .unwrap_err();
    assert!(err.to_string().contains("nobody"));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn delete_subject_erases_everything_but_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, _) = store_with(dir.path(), &["alice", "bob"]);
    let r = store
        .delete_subject(&sid("alice"), "op-7", "erasure request")
        .unwrap();
    assert_eq!((r.templates_deleted, r.consents_affected), (1, 1));
    assert!(store.subject(&sid("alice")).unwrap().is_none());
    let counts = store.counts().unwrap();
    assert_eq!(counts.subjects_with_templates, 1);
    assert_eq!(counts.subjects, 1);
    let deletions: Vec<_> = store
        .audit_records(0, 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == AuditKind::Deletion.as_str())
        .collect();
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].subject.as_deref(), Some("alice"));
}

#[test]
fn sweep_applies_retention_and_shortened_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &["adult"]);
    // A 16-year-old: minor retention, 180 days.
    let c = consent(&policy, "teen", 16, T0);
    store.enroll(&c, &[emb(5)], MODEL).unwrap();
    // A 10-year-old with a guardian.
    let c = consent(&policy, "child", 10, T0);
    store.enroll(&c, &[emb(6)], MODEL).unwrap();
    store.load_gallery(MODEL, DIM).unwrap();

    clock.set(T0.plus_days(179));
    assert_eq!(store.sweep_expired().unwrap().templates_deleted, 0);
    clock.set(T0.plus_days(180));
    let r = store.sweep_expired().unwrap();
    assert_eq!(
        (r.templates_deleted, r.subjects_affected, r.keys_destroyed),
        (2, 2, 2)
    );
    assert_eq!(store.gallery().unwrap().len(), 1);

    // The operator shortens retention to 90 days: existing data follows at the next sweep.
    store.set_policy(&policy_with(90, None), "admin").unwrap();
    let r = store.sweep_expired().unwrap();
    assert_eq!(r.expiries_shortened, 1);
    assert_eq!(r.templates_deleted, 1);
    assert!(store.gallery().unwrap().is_empty());
    assert_eq!(store.counts().unwrap().templates, 0);
    let kinds = store.audit_counts().unwrap();
    assert!(kinds.get("expiry").copied().unwrap_or(0) >= 3);
    // The first notice recorded, the reload, and the notice version it brought (the
    // retention people are told changed).
    assert_eq!(kinds.get("config_change"), Some(&3));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn enrollment_refuses_bad_inputs_with_the_subject_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _, policy) = store_with(dir.path(), &[]);
    let c = consent(&policy, "alice", 30, T0);
    let err = store.enroll(&c, &[], MODEL).unwrap_err();
    assert!(matches!(err, StoreError::Embedding { .. }) && err.to_string().contains("alice"));
    let err = store.enroll(&c, &[emb(1)], "bad model id").unwrap_err();
    assert!(matches!(err, StoreError::InvalidModelId { .. }), "{err}");
    store.load_gallery(MODEL, DIM).unwrap();
    let short = facegate_types::Embedding::from_raw(vec![1.0, 0.0]).unwrap();
    let err = store.enroll(&c, &[short], MODEL).unwrap_err();
    assert!(matches!(err, StoreError::DimensionMismatch { .. }), "{err}");
    assert_eq!(store.counts().unwrap().templates, 0);
}

fn clock_now(c: &facegate_types::ManualClock) -> UnixMillis {
    use facegate_types::Clock;
    c.now()
}
