//! Property tests over random sequences of enroll / withdraw / sweep / clock jumps / retention
//! changes: no template without a live consent, none outlives its retention after a sweep,
//! withdrawal always deletes (templates and key), the gallery follows the database, and the
//! audit chain always verifies.

use std::collections::HashMap;
use std::path::Path;

use facegate_policy::{Consent, PolicyConfig};
use facegate_store::{Store, StoreError};
use facegate_types::{Clock, ManualClock, UnixMillis};
use proptest::prelude::*;

use crate::common::*;

#[derive(Debug, Clone)]
enum Op {
    /// Grant a fresh consent now and enroll with it.
    Enroll {
        who: usize,
        age: u8,
    },
    /// Enroll again with the consent value granted earlier (it may have expired or been
    /// withdrawn since).
    EnrollOld {
        who: usize,
    },
    Withdraw {
        who: usize,
    },
    Sweep,
    /// Move the clock forward.
    Jump {
        hours: u32,
    },
    /// Reload the policy with another retention (shorter or longer).
    Retention {
        days: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, prop_oneof![Just(10u8), Just(16u8), Just(35u8)])
            .prop_map(|(who, age)| Op::Enroll { who, age }),
        2 => (0..6usize).prop_map(|who| Op::EnrollOld { who }),
        2 => (0..6usize).prop_map(|who| Op::Withdraw { who }),
        2 => Just(Op::Sweep),
        2 => (0..24 * 400u32).prop_map(|hours| Op::Jump { hours }),
        1 => (30..400u32).prop_map(|days| Op::Retention { days }),
    ]
}

struct Model {
    policy: PolicyConfig,
    consents: HashMap<usize, Consent>,
    /// Last withdrawal time per subject.
    withdrawn: HashMap<usize, UnixMillis>,
    retention_changed: bool,
}

fn name(who: usize) -> String {
    format!("subj-{who}")
}

fn check_invariants(
    dir: &Path,
    store: &Store,
    model: &Model,
    now: UnixMillis,
    just_swept: bool,
) -> Result<(), TestCaseError> {
    let c = raw(dir);
    // Every template hangs off a consent that was not withdrawn, and has its subject's key.
    let orphans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM templates t
             LEFT JOIN consents c ON c.id = t.consent_id
             LEFT JOIN subject_keys k ON k.subject_id = t.subject_id
             WHERE c.id IS NULL OR c.withdrawn_at IS NOT NULL OR k.subject_id IS NULL
                OR t.expires_at > c.expires_at",
            [],
            |r| r.get(0),
        )
        .unwrap();
    prop_assert_eq!(
        orphans,
        0,
        "template without a live, unwithdrawn consent or key"
    );
    if just_swept {
        // Nothing outlives its retention, judged by the current policy.
        let mut stmt = c
            .prepare(
                "SELECT t.expires_at, c.granted_at, json_extract(c.record, '$.age_years')
                 FROM templates t JOIN consents c ON c.id = t.consent_id",
            )
            .unwrap();
        let rows: Vec<(i64, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (exp, granted, age) in rows {
            prop_assert!(exp > now.0, "expired template survived a sweep");
            let until = model.policy.retention_until(UnixMillis(granted), age as u8);
            prop_assert!(exp <= until.0, "template outlives the current retention");
        }
        let stale_keys: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM subject_keys k
                 WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.subject_id = k.subject_id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        prop_assert_eq!(stale_keys, 0, "key kept for a subject without templates");
    }
    // The gallery holds exactly the stored templates.
    let mut db: Vec<i64> = c
        .prepare("SELECT id FROM templates ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut mem: Vec<i64> = store
        .gallery()
        .unwrap()
        .rows()
        .iter()
        .map(|r| r.template.0 as i64)
        .collect();
    db.sort_unstable();
    mem.sort_unstable();
    prop_assert_eq!(db, mem, "gallery out of step with the database");
    let v = store.verify_audit().unwrap();
    prop_assert!(v.is_intact(), "audit chain broken: {:?}", v.first_break);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut model = Model {
        policy: policy(),
        consents: HashMap::new(),
        withdrawn: HashMap::new(),
        retention_changed: false,
    };
    let mut store = open_at(dir.path(), &key(1), &clock, &model.policy);
    store.load_gallery(MODEL, DIM).unwrap();
    let mut seed = 1u64;
    for op in ops {
        let now = clock.now();
        let mut swept = false;
        match op {
            Op::Enroll { who, age } => {
                let c = model
                    .policy
                    .grant(record(&model.policy, &name(who), age, now), now)
                    .unwrap();
                seed += 1;
                let res = store.enroll(&c, &[emb(seed)], MODEL);
                // A consent granted at or before the subject's last withdrawal is void (here:
                // granted in the same millisecond, as the manual clock did not move).
                if model.withdrawn.get(&who).is_some_and(|w| *w >= now) {
                    prop_assert!(
                        matches!(res, Err(StoreError::ConsentWithdrawn { .. })),
                        "{:?}",
                        res
                    );
                } else {
                    res.unwrap();
                }
                model.consents.insert(who, c);
            }
            Op::EnrollOld { who } => {
                let Some(c) = model.consents.get(&who).cloned() else {
                    continue;
                };
                seed += 1;
                let res = store.enroll(&c, &[emb(seed)], MODEL);
                let withdrawn_since = model
                    .withdrawn
                    .get(&who)
                    .is_some_and(|w| *w >= c.record().granted_at);
                let retention = model
                    .policy
                    .retention_until(c.record().granted_at, c.record().age_years);
                let live = c.is_live(now) && retention > now;
                match res {
                    Ok(_) => {
                        prop_assert!(live && !withdrawn_since, "enrolled without live consent")
                    }
                    // The ledger may also hold an expiry a sweep shortened under an earlier,
                    // shorter retention (expiries are never lengthened again).
                    Err(StoreError::ConsentNotLive { .. }) => {
                        prop_assert!(!live || model.retention_changed)
                    }
                    Err(StoreError::ConsentWithdrawn { .. }) => prop_assert!(withdrawn_since),
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
                }
            }
            Op::Withdraw { who } => {
                let s = sid(&name(who));
                match store.withdraw(&withdrawal(&name(who), now)) {
                    Ok(_) => {
                        model.withdrawn.insert(who, now);
                    }
                    Err(StoreError::UnknownSubject { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("withdraw: {e}"))),
                }
                // Withdrawal always deletes: no template, no key, nothing in the gallery.
                if let Some(d) = store.subject(&s).unwrap() {
                    prop_assert!(d.templates.is_empty());
                    prop_assert!(!d.summary.has_key);
                    prop_assert!(d.consents.iter().all(|c| c.withdrawn_at.is_some()));
                }
                prop_assert!(store.gallery().unwrap().templates_of(&s).is_empty());
            }
            Op::Sweep => {
                store.sweep_expired().unwrap();
                swept = true;
            }
            Op::Jump { hours } => clock.advance_ms(i64::from(hours) * 3_600_000),
            Op::Retention { days } => {
                model.policy = policy_with(days, Some(days.min(180)));
                model.retention_changed = true;
                store.set_policy(&model.policy, "admin").unwrap();
            }
        }
        check_invariants(dir.path(), &store, &model, clock.now(), swept)?;
    }
    // A final sweep leaves nothing expired, and a reopened store agrees.
    store.sweep_expired().unwrap();
    check_invariants(dir.path(), &store, &model, clock.now(), true)?;
    drop(store);
    let mut store = open_at(dir.path(), &key(1), &clock, &model.policy);
    let load = store.load_gallery(MODEL, DIM).unwrap();
    prop_assert!(load.failures.is_empty());
    check_invariants(dir.path(), &store, &model, clock.now(), true)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn consent_retention_withdrawal_and_audit_hold(ops in prop::collection::vec(op(), 1..30)) {
        run(ops)?;
    }
}
