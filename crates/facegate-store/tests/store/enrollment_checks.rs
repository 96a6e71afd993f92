//! Enrollment that cannot be poisoned: `Store::enroll_checked` refuses samples of several
//! people and a face that is already enrolled under another id, unless an operator names that
//! subject with a reason; refusals and overrides are in the audit chain.

use facegate_store::{
    DuplicateOverride, EnrollmentCheck, SearchMode, StoreError, disagreeing_sample,
};
use facegate_types::Embedding;

use crate::common::*;

const THRESHOLD: f32 = 0.4;

/// Another photo of the person `base`: `base` plus a little independent noise.
fn near(base: u64, noise: u64) -> Embedding {
    let (b, n) = (emb(base), emb(1_000 + noise));
    let v = b
        .as_slice()
        .iter()
        .zip(n.as_slice())
        .map(|(x, y)| x + 0.5 * y)
        .collect();
    Embedding::from_raw(v).unwrap()
}

fn check() -> EnrollmentCheck {
    EnrollmentCheck {
        threshold: THRESHOLD,
        allow_duplicate_of: None,
    }
}

fn refusals(store: &facegate_store::Store) -> Vec<String> {
    store
        .audit_records(0, 1_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "enroll" && r.outcome == "refused")
        .map(|r| r.details)
        .collect()
}

#[test]
fn the_worst_sample_is_named_and_ties_go_to_the_later_one() {
    assert!(
        near(1, 1).cosine(&near(1, 2)) > 0.7,
        "test persons too noisy"
    );
    assert_eq!(
        disagreeing_sample(&[near(1, 1), near(1, 2), near(1, 3)], THRESHOLD),
        None
    );
    let (i, others, lowest) = disagreeing_sample(&[near(1, 1), near(2, 2)], THRESHOLD).unwrap();
    assert_eq!((i, others), (1, vec![0]));
    assert!(lowest < THRESHOLD);
    let (i, others, _) =
        disagreeing_sample(&[near(1, 1), near(3, 9), near(1, 2), near(1, 3)], THRESHOLD).unwrap();
    assert_eq!((i, others), (1, vec![0, 2, 3]));
    assert_eq!(disagreeing_sample(&[near(1, 1)], THRESHOLD), None);
}

#[test]
fn photos_of_two_people_in_one_enrollment_are_refused_naming_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _clock, policy) = store_with(dir.path(), &[]);
    let c = consent(&policy, "alice", 30, T0);
    let err = store
        .enroll_checked(&c, &[near(1, 1), near(1, 2), near(2, 3)], MODEL, &check())
        .unwrap_err();
    match &err {
        StoreError::SamplesDisagree { sample, others, .. } => {
            assert_eq!((*sample, others.as_slice()), (3, &[1, 2][..]));
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("alice") && msg.contains("sample 3"), "{msg}");
    // Nothing was written but the refusal.
    assert!(store.subject(&sid("alice")).unwrap().is_none());
    assert_eq!(refusals(&store).len(), 1);
    // The same person's photos go through.
    store
        .enroll_checked(&c, &[near(1, 1), near(1, 2)], MODEL, &check())
        .unwrap();
    assert_eq!(
        store
            .subject(&sid("alice"))
            .unwrap()
            .unwrap()
            .templates
            .len(),
        1
    );
}

#[test]
fn a_face_enrolled_under_a_second_id_is_refused_unless_overridden_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _clock, policy) = store_with(dir.path(), &[]);
    let alice = consent(&policy, "alice", 30, T0);
    store
        .enroll_checked(&alice, &[near(1, 1), near(1, 2)], MODEL, &check())
        .unwrap();
    store
        .enroll_checked(
            &consent(&policy, "carol", 30, T0),
            &[near(5, 1)],
            MODEL,
            &check(),
        )
        .unwrap();

    // The same photo (and another photo of alice) under the id "bob": refused, naming alice.
    let bob = consent(&policy, "bob", 30, T0);
    for samples in [vec![near(1, 1)], vec![near(1, 7), near(1, 8)]] {
        let err = store
            .enroll_checked(&bob, &samples, MODEL, &check())
            .unwrap_err();
        match &err {
            StoreError::DuplicateFace {
                existing, score, ..
            } => {
                assert_eq!(existing, &sid("alice"));
                assert!(*score >= THRESHOLD);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("alice") && err.to_string().contains("bob"));
    }
    assert!(store.subject(&sid("bob")).unwrap().is_none());
    assert_eq!(refusals(&store).len(), 2);

    // Re-enrolling alice herself is fine: her own templates are not duplicates.
    store
        .enroll_checked(&alice, &[near(1, 9)], MODEL, &check())
        .unwrap();
    let g = store.gallery().unwrap();
    assert_eq!(g.templates_of(&sid("alice")).len(), 2);
    let hits = g.identify(&near(5, 2), 3, SearchMode::Exact).unwrap();
    assert_eq!(hits.hits[0].subject, sid("carol"));

    // An override naming someone else does not cover it.
    let wrong = EnrollmentCheck {
        allow_duplicate_of: Some(DuplicateOverride {
            subject: sid("carol"),
            reason: "twins".into(),
        }),
        ..check()
    };
    let err = store
        .enroll_checked(&bob, &[near(1, 1)], MODEL, &wrong)
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateFace { .. }), "{err}");

    // Naming alice with a reason lets it through, and the audit record says so.
    let allowed = EnrollmentCheck {
        allow_duplicate_of: Some(DuplicateOverride {
            subject: sid("alice"),
            reason: "second badge for the night shift".into(),
        }),
        ..check()
    };
    let t = store
        .enroll_checked(&bob, &[near(1, 1)], MODEL, &allowed)
        .unwrap();
    let rec = store
        .audit_records(0, 1_000)
        .unwrap()
        .into_iter()
        .rfind(|r| r.kind == "enroll" && r.subject.as_deref() == Some("bob"))
        .unwrap();
    assert_eq!(rec.outcome, "ok_duplicate_allowed");
    assert!(
        rec.details.contains("\"duplicate_of\":\"alice\""),
        "{}",
        rec.details
    );
    assert!(rec.details.contains("second badge for the night shift"));
    assert!(rec.details.contains(&format!("\"template\":{}", t.0)));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn a_threshold_that_is_no_cosine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _clock, policy) = store_with(dir.path(), &[]);
    let c = consent(&policy, "alice", 30, T0);
    for t in [f32::NAN, 1.5, -2.0] {
        let bad = EnrollmentCheck {
            threshold: t,
            allow_duplicate_of: None,
        };
        let err = store
            .enroll_checked(&c, &[near(1, 1)], MODEL, &bad)
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidThreshold { .. }), "{err}");
    }
}

#[test]
fn the_gallery_generation_moves_with_the_gallery_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, clock, policy) = store_with(dir.path(), &[]);
    let g0 = store.gallery_generation();
    store.load_gallery(MODEL, DIM).unwrap();
    let g1 = store.gallery_generation();
    assert_ne!(g0, g1, "a load is a change");
    let alice = consent(&policy, "alice", 30, T0);
    store
        .enroll_checked(&alice, &[near(1, 1)], MODEL, &check())
        .unwrap();
    let g2 = store.gallery_generation();
    assert_ne!(g1, g2, "an enrollment is a change");
    let bob = consent(&policy, "bob", 30, T0);
    assert!(
        store
            .enroll_checked(&bob, &[near(1, 2)], MODEL, &check())
            .is_err()
    );
    assert_eq!(store.gallery_generation(), g2, "a refusal changes nothing");
    clock.advance_ms(1_000);
    store
        .withdraw(&withdrawal("alice", facegate_types::Clock::now(&clock)))
        .unwrap();
    assert_ne!(store.gallery_generation(), g2, "a withdrawal is a change");
}
