//! Transfer between terminals: two stores (two state directories, two master keys, two
//! terminal key pairs), the happy path and every refusal, one-byte tampering, withdrawal
//! notices both ways, replays.

use facegate_policy::{
    ConsentMethod, PolicyConfig, PolicyError, TerminalId, TransferConsentRecord,
};
use facegate_store::{
    AuditKind, NoticeOutcome, SearchMode, Store, StoreError, TerminalPublic, TransferDirection,
};
use facegate_types::{ManualClock, UnixMillis};

use crate::common::*;

const THRESHOLD: f32 = 0.4;

struct Terminal {
    _dir: tempfile::TempDir,
    store: Store,
    clock: ManualClock,
    policy: PolicyConfig,
    public: TerminalPublic,
}

fn terminal(name: &str, key_byte: u8, enrolled: &[&str]) -> Terminal {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let policy = policy();
    let mut store = open_at(dir.path(), &key(key_byte), &clock, &policy);
    for (i, n) in enrolled.iter().enumerate() {
        store
            .enroll(&consent(&policy, n, 30, T0), &[emb(i as u64 + 1)], MODEL)
            .unwrap();
    }
    let public = store.create_terminal_keys(name, "op-7").unwrap();
    Terminal {
        _dir: dir,
        store,
        clock,
        policy,
        public,
    }
}

fn transfer_consent(t: &mut Terminal, subject: &str, to: &[&TerminalPublic]) {
    let record = TransferConsentRecord {
        subject: sid(subject),
        age_years: 30,
        terminals: to.iter().map(|p| p.id()).collect(),
        notice_version: t.policy.notice().version(),
        method: ConsentMethod::Written,
        operator: "op-7".into(),
        guardian: None,
        granted_at: t.clock_now(),
    };
    let c = t.policy.grant_transfer(record, t.clock_now()).unwrap();
    t.store.record_transfer_consent(&c).unwrap();
}

impl Terminal {
    fn clock_now(&self) -> UnixMillis {
        self.store.now()
    }

    fn export(&mut self, subject: &str, to: &TerminalPublic) -> Result<Vec<u8>, StoreError> {
        self.store
            .export_enrollment(&sid(subject), to, MODEL, "op-7")
            .map(|r| r.bundle)
    }

    fn import(&mut self, bundle: &[u8], from: &TerminalPublic) -> Result<(), StoreError> {
        self.store
            .import_enrollment(bundle, from, THRESHOLD, "op-9")
            .map(|_| ())
    }

    fn identifies(&mut self, seed: u64) -> Option<String> {
        self.store.load_gallery(MODEL, DIM).unwrap();
        let found = self
            .store
            .gallery()
            .unwrap()
            .identify(&emb(seed), 1, SearchMode::Exact)
            .unwrap();
        found
            .hits
            .first()
            .filter(|h| h.score > 0.99)
            .map(|h| h.subject.to_string())
    }

    fn audit_outcomes(&self, kind: AuditKind) -> Vec<String> {
        self.store
            .audit_records(0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == kind.as_str())
            .map(|r| r.outcome)
            .collect()
    }
}

#[test]
fn an_enrollment_moves_with_its_consent_and_retention_and_both_sides_audit() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let mut b = terminal("gate-b", 2, &[]);
    assert_ne!(a.public.id(), b.public.id());
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    let bundle = a.export("emp-1", &b.public).unwrap();
    // The bundle holds no template value in clear.
    let values: Vec<u8> = emb(1).as_slice()[..4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(!contains(&bundle, &values));
    assert!(!contains(&bundle, hex::encode(&values).as_bytes()));
    b.clock.advance_ms(60_000);
    let report = b
        .store
        .import_enrollment(&bundle, &a.public, THRESHOLD, "op-9")
        .unwrap();
    assert_eq!(report.subject.as_str(), "emp-1");
    assert_eq!(report.templates.len(), 1);
    assert_eq!(report.sender, a.public.id());
    // The same retention end as on the sender: granted at T0, 365 days.
    assert_eq!(report.expires_at, T0.plus_days(365));
    assert_eq!(b.identifies(1).as_deref(), Some("emp-1"));
    let consent = b.store.live_consent(&sid("emp-1")).unwrap().unwrap();
    assert_eq!(consent.record().granted_at, T0);
    assert_eq!(consent.record().operator, "op-7");
    // Both sides audit; where the person went is recorded on the sender.
    assert_eq!(a.audit_outcomes(AuditKind::Export), ["ok"]);
    assert_eq!(b.audit_outcomes(AuditKind::Import), ["ok"]);
    let sent = a.store.transfers_of(&sid("emp-1")).unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].direction, TransferDirection::Out);
    assert_eq!(sent[0].peer, b.public.id());
    assert_eq!(sent[0].peer_name, "gate-b");
    assert_eq!(
        b.store.transfers_of(&sid("emp-1")).unwrap()[0].direction,
        TransferDirection::In
    );
    assert!(a.store.verify_audit().unwrap().first_break.is_none());
    assert!(b.store.verify_audit().unwrap().first_break.is_none());
}

#[test]
fn no_export_without_a_separate_transfer_consent_for_that_terminal() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let b = terminal("gate-b", 2, &[]);
    let c = terminal("gate-c", 3, &[]);
    // The face consent alone is not enough (Art. 6: separate).
    let err = a.export("emp-1", &b.public).unwrap_err();
    assert!(matches!(err, StoreError::NoTransferConsent { .. }), "{err}");
    assert!(err.to_string().contains("--transfer-to"), "{err}");
    // A consent for gate-c does not reach gate-b.
    transfer_consent(&mut a, "emp-1", &[&c.public]);
    assert!(matches!(
        a.export("emp-1", &b.public).unwrap_err(),
        StoreError::NoTransferConsent { .. }
    ));
    assert!(a.export("emp-1", &c.public).is_ok());
    // No face consent: refused too (a person who only has a transfer consent).
    transfer_consent(&mut a, "emp-2", &[&b.public]);
    assert!(matches!(
        a.export("emp-2", &b.public).unwrap_err(),
        StoreError::NoLiveConsent { .. }
    ));
    // Refusals are in the processing record.
    assert_eq!(
        a.audit_outcomes(AuditKind::Export),
        ["refused", "refused", "ok", "refused"]
    );
    // After a withdrawal, neither consent is left.
    a.store
        .withdraw(&withdrawal("emp-1", a.clock_now()))
        .unwrap();
    assert!(
        a.store
            .transfer_consent_for(&sid("emp-1"), &c.public.id())
            .unwrap()
            .is_none()
    );
    assert!(a.export("emp-1", &c.public).is_err());
}

#[test]
fn the_receiver_refuses_every_bundle_it_must_not_take() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let mut b = terminal("gate-b", 2, &[]);
    let mut c = terminal("gate-c", 3, &[]);
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    let bundle = a.export("emp-1", &b.public).unwrap();

    // Another terminal: not addressed to it.
    let err = c.import(&bundle, &a.public).unwrap_err();
    assert!(
        matches!(err, StoreError::TransferNotForThisTerminal { .. }),
        "{err}"
    );
    // The operator expects another sender.
    let err = b.import(&bundle, &c.public).unwrap_err();
    assert!(matches!(err, StoreError::TransferSender { .. }), "{err}");
    // Not a bundle at all.
    assert!(matches!(
        b.import(b"{\"format\": \"zip\"}", &a.public).unwrap_err(),
        StoreError::TransferFormat { .. }
    ));
    // One changed byte anywhere in the signed and sealed fields is refused, and nothing is
    // stored (a changed digit elsewhere either breaks the JSON or a bound header field).
    let text = String::from_utf8(bundle.clone()).unwrap();
    let sealed_at = text.find("\"sealed\": \"").unwrap() + 11;
    for offset in [0usize, 7, 40, 101] {
        let mut t = bundle.clone();
        let i = sealed_at + offset;
        t[i] = if t[i] == b'0' { b'1' } else { b'0' };
        let err = b.import(&t, &a.public).unwrap_err();
        assert!(
            matches!(err, StoreError::TransferTampered { .. }),
            "offset {offset}: {err}"
        );
    }
    for i in (0..bundle.len()).step_by(53) {
        let mut t = bundle.clone();
        t[i] ^= 0x01;
        assert!(b.import(&t, &a.public).is_err(), "byte {i} changed");
    }
    assert!(b.store.list_subjects().unwrap().is_empty());
    assert!(
        b.audit_outcomes(AuditKind::Import)
            .iter()
            .all(|o| o == "refused")
    );

    // The genuine bundle then goes in, once: a second import is a duplicate.
    b.import(&bundle, &a.public).unwrap();
    let err = b.import(&bundle, &a.public).unwrap_err();
    assert!(matches!(err, StoreError::TransferDuplicate { .. }), "{err}");
    assert_eq!(b.store.counts().unwrap().templates, 1);
}

#[test]
fn an_older_transfer_is_a_replay_and_a_newer_one_of_a_withdrawn_person_is_refused() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let mut b = terminal("gate-b", 2, &[]);
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    let old = a.export("emp-1", &b.public).unwrap();
    a.clock.advance_ms(1_000);
    let new = a.export("emp-1", &b.public).unwrap();
    b.import(&new, &a.public).unwrap();
    b.store.delete_subject(&sid("emp-1"), "op", "test").unwrap();
    // The older one is refused even though nothing of the person is stored any more.
    let err = b.import(&old, &a.public).unwrap_err();
    assert!(
        matches!(err, StoreError::TransferSuperseded { .. }),
        "{err}"
    );

    // A person withdrawn at the sender: the notice reaches b, and a bundle made before the
    // withdrawal but never imported is refused.
    let mut b2 = terminal("gate-b2", 4, &[]);
    transfer_consent(&mut a, "emp-1", &[&b2.public]);
    let first = a.export("emp-1", &b2.public).unwrap();
    a.clock.advance_ms(1_000);
    let second = a.export("emp-1", &b2.public).unwrap();
    b2.import(&first, &a.public).unwrap();
    a.clock.advance_ms(1_000);
    let at = a.clock_now();
    a.store.withdraw(&withdrawal("emp-1", at)).unwrap();
    let (notice, _) = a.store.withdrawal_notice(&sid("emp-1"), at).unwrap();
    b2.clock.advance_ms(10_000);
    b2.store.apply_withdrawal_notice(&notice, "op-9").unwrap();
    let err = b2.import(&second, &a.public).unwrap_err();
    assert!(matches!(err, StoreError::ConsentWithdrawn { .. }), "{err}");
    assert_eq!(b2.store.counts().unwrap().templates, 0);
}

#[test]
fn expired_retention_existing_enrollment_and_a_duplicate_face_are_refused() {
    let mut a = terminal("gate-a", 1, &["emp-1", "emp-2"]);
    // b already holds emp-1 (enrolled there) and emp-9 with emp-2's face.
    let mut b = terminal("gate-b", 2, &["emp-1"]);
    b.store
        .enroll(&consent(&b.policy, "emp-9", 30, T0), &[emb(2)], MODEL)
        .unwrap();
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    transfer_consent(&mut a, "emp-2", &[&b.public]);
    let one = a.export("emp-1", &b.public).unwrap();
    let two = a.export("emp-2", &b.public).unwrap();
    let err = b.import(&one, &a.public).unwrap_err();
    assert!(
        matches!(err, StoreError::TransferAlreadyEnrolled { .. }),
        "{err}"
    );
    let err = b.import(&two, &a.public).unwrap_err();
    assert!(matches!(err, StoreError::DuplicateFace { .. }), "{err}");

    // A bundle whose consent is past its retention when it arrives.
    let mut late = terminal("gate-late", 5, &[]);
    transfer_consent(&mut a, "emp-1", &[&late.public]);
    let bundle = a.export("emp-1", &late.public).unwrap();
    late.clock.set(T0.plus_days(366));
    let err = late.import(&bundle, &a.public).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TransferRefused {
                source: PolicyError::ConsentExpired { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_receiver_with_a_shorter_retention_keeps_its_own() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let short = policy_with(30, None);
    let mut raw_b = open_at(dir.path(), &key(2), &clock, &short);
    let b_pub = raw_b.create_terminal_keys("gate-b", "op").unwrap();
    transfer_consent(&mut a, "emp-1", &[&b_pub]);
    let bundle = a.export("emp-1", &b_pub).unwrap();
    // a's notice version is 1, b's is higher: the consent was given under a notice b knows.
    let r = raw_b
        .import_enrollment(&bundle, &a.public, THRESHOLD, "op")
        .unwrap();
    assert_eq!(r.expires_at, T0.plus_days(30));
}

#[test]
fn withdrawal_notices_travel_both_ways_once_and_only_from_known_terminals() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let mut b = terminal("gate-b", 2, &[]);
    let c = terminal("gate-c", 3, &["emp-1"]);
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    let bundle = a.export("emp-1", &b.public).unwrap();
    b.import(&bundle, &a.public).unwrap();
    assert_eq!(b.identifies(1).as_deref(), Some("emp-1"));

    // c never exchanged emp-1 with b: its notice is refused.
    let (forged, _) = c.store.withdrawal_notice(&sid("emp-1"), T0).unwrap();
    let err = b
        .store
        .apply_withdrawal_notice(&forged, "op-9")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NoticeIssuerUnknown { .. }),
        "{err}"
    );

    // a's notice, with the time changed: the signature no longer holds.
    let at = a.clock_now();
    a.store.withdraw(&withdrawal("emp-1", at)).unwrap();
    let (notice, _) = a.store.withdrawal_notice(&sid("emp-1"), at).unwrap();
    let text = String::from_utf8(notice.clone()).unwrap();
    let changed = text.replace(&at.0.to_string(), &(at.0 + 1).to_string());
    let err = b
        .store
        .apply_withdrawal_notice(changed.as_bytes(), "op-9")
        .unwrap_err();
    assert!(matches!(err, StoreError::NoticeSignature { .. }), "{err}");
    assert_eq!(b.identifies(1).as_deref(), Some("emp-1"));

    // The genuine notice: the template is gone at once, the audit chain intact, and applying
    // it again changes nothing.
    let (_, outcome) = b.store.apply_withdrawal_notice(&notice, "op-9").unwrap();
    match outcome {
        NoticeOutcome::Applied(r) => {
            assert_eq!(r.templates_deleted, 1);
            assert!(r.key_destroyed);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.identifies(1), None);
    assert_eq!(b.store.counts().unwrap().templates, 0);
    assert!(b.store.live_consent(&sid("emp-1")).unwrap().is_none());
    assert!(b.store.verify_audit().unwrap().first_break.is_none());
    let (_, again) = b.store.apply_withdrawal_notice(&notice, "op-9").unwrap();
    assert_eq!(again, NoticeOutcome::AlreadyApplied);
    assert_eq!(b.audit_outcomes(AuditKind::Withdrawal), ["ok"]);

    // The other way: a person who withdraws at the receiver; the sender applies b's notice.
    let mut a2 = terminal("gate-a2", 6, &["emp-5"]);
    let mut b2 = terminal("gate-b2", 7, &[]);
    transfer_consent(&mut a2, "emp-5", &[&b2.public]);
    let bundle = a2.export("emp-5", &b2.public).unwrap();
    b2.import(&bundle, &a2.public).unwrap();
    let at = b2.clock_now();
    b2.store.withdraw(&withdrawal("emp-5", at)).unwrap();
    let (notice, _) = b2.store.withdrawal_notice(&sid("emp-5"), at).unwrap();
    let (_, outcome) = a2.store.apply_withdrawal_notice(&notice, "op").unwrap();
    assert!(matches!(outcome, NoticeOutcome::Applied(r) if r.templates_deleted == 1));
    assert!(a2.store.verify_audit().unwrap().first_break.is_none());
}

#[test]
fn terminal_keys_are_made_once_sealed_and_survive_a_master_key_rotation() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let b = terminal("gate-b", 2, &[]);
    let err = a.store.create_terminal_keys("again", "op").unwrap_err();
    assert!(matches!(err, StoreError::TerminalKeysExist { .. }), "{err}");
    // The secret half is not in the database in clear: only the public line is readable.
    let dir = a._dir.path().to_path_buf();
    let secret: String = raw(&dir)
        .query_row(
            "SELECT value FROM settings WHERE key = 'terminal_secret'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(secret.contains(':'));
    a.store.rotate_master_key(&key(9), "op").unwrap();
    let Terminal {
        _dir,
        store,
        clock,
        policy,
        public,
    } = a;
    drop(store);
    let store = open_at(&dir, &key(9), &clock, &policy);
    assert_eq!(store.terminal_public().unwrap().unwrap(), public);
    let mut a = Terminal {
        _dir,
        store,
        clock,
        policy,
        public,
    };
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    assert!(a.export("emp-1", &b.public).is_ok());
    // A terminal id is the fingerprint of the keys, not of the name.
    let line = a.public.to_line().replace("gate-a", "gate-z");
    assert_eq!(TerminalPublic::parse(&line).unwrap().id(), a.public.id());
    assert!(TerminalId::new(a.public.id().to_string()).is_ok());
}

#[test]
fn an_edited_transfer_record_is_refused_not_trusted() {
    let mut a = terminal("gate-a", 1, &["emp-1"]);
    let mut b = terminal("gate-b", 2, &[]);
    let m = terminal("mallory", 3, &[]);
    transfer_consent(&mut a, "emp-1", &[&b.public]);
    let bundle = a.export("emp-1", &b.public).unwrap();
    b.import(&bundle, &a.public).unwrap();
    // Someone who can write b's database swaps a's key for theirs in the transfer register,
    // to have their notices believed (or a's refused).
    raw(b._dir.path())
        .execute(
            "UPDATE transfers SET peer = ?1, peer_id = ?2",
            rusqlite::params![m.public.to_line(), m.public.id().as_str()],
        )
        .unwrap();
    let (forged, _) = m.store.withdrawal_notice(&sid("emp-1"), T0).unwrap();
    let err = b.store.apply_withdrawal_notice(&forged, "op").unwrap_err();
    assert!(
        matches!(err, StoreError::TransferRecordTampered { .. }),
        "{err}"
    );
    assert!(b.store.transfers_of(&sid("emp-1")).is_err());
    assert_eq!(b.identifies(1).as_deref(), Some("emp-1"));
}
