//! The credential register (Art. 10): PINs, cards and QR codes issued to holders, who need not
//! have any face consent. A holder is a person id in the same namespace as face subjects (the
//! same person can have both), but a credential never depends on a face consent: withdrawing
//! face consent, or never giving one, leaves it working.
//!
//! No value is stored in clear: each row holds `HMAC-SHA256(k_cred, kind || canonical value)`,
//! where `k_cred` is derived from the store's audit secret (wrapped under the master key, so a
//! copy of the database alone cannot test PINs offline, and a master key rotation keeps every
//! credential). A value is live for one holder at a time (a unique index), expires after
//! `[alternatives].credential_days` and is removed by the retention sweep after its expiry.
//!
//! A card's number is also kept sealed (`sealed_value`: AES-256-GCM under a second key derived
//! from the audit secret, the associated data binding holder, kind and digest), because the
//! Wiegand and OSDP outputs report a face grant to the site's panel as the holder's card read
//! ([`Store::card_number`]). PINs and QR codes are never kept beyond their digest.

use facegate_policy::CredentialKind;
use facegate_types::{SubjectId, UnixMillis};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{OptionalExtension, params};
use serde_json::json;

use crate::audit::{AuditEvent, AuditKind};
use crate::seal::Secret;
use crate::{Store, StoreError};

const DIGEST_LABEL: &[u8] = b"facegate-credential/v1";
const NUMBER_LABEL: &[u8] = b"facegate-credential-number/v1";

/// The keyed digest of credential values, and the key that seals card numbers.
pub(crate) struct CredentialKey(hmac::Key, LessSafeKey);

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(<redacted>)")
    }
}

impl CredentialKey {
    /// Derived from the audit secret: `HMAC(audit_secret, label)`.
    pub(crate) fn derive(audit_secret: &Secret) -> Self {
        let base = hmac::Key::new(hmac::HMAC_SHA256, audit_secret.as_slice());
        let tag = zeroize::Zeroizing::new(hmac::sign(&base, NUMBER_LABEL).as_ref().to_vec());
        let sealing = match UnboundKey::new(&AES_256_GCM, &tag) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("an HMAC-SHA256 tag is a 32-byte AES-256 key"),
        };
        Self(
            crate::seal::derived_hmac_key(audit_secret, DIGEST_LABEL),
            sealing,
        )
    }

    fn number_aad(holder: &SubjectId, kind: CredentialKind, digest: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(NUMBER_LABEL.len() + 96);
        aad.extend_from_slice(NUMBER_LABEL);
        for part in [holder.as_str().as_bytes(), kind.as_str().as_bytes(), digest] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }

    /// `nonce || AES-256-GCM(value)`, bound to the row's holder, kind and digest.
    fn seal_number(
        &self,
        holder: &SubjectId,
        kind: CredentialKind,
        digest: &[u8],
        value: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Random {
                what: "a card number nonce",
            })?;
        let mut buf = value.as_bytes().to_vec();
        self.1
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::number_aad(holder, kind, digest)),
                &mut buf,
            )
            .map_err(|_| StoreError::Random {
                what: "a sealed card number",
            })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens [`CredentialKey::seal_number`]'s output; `None` when it does not authenticate.
    fn open_number(
        &self,
        holder: &SubjectId,
        kind: CredentialKind,
        digest: &[u8],
        sealed: &[u8],
    ) -> Option<String> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain = self
            .1
            .open_in_place(
                nonce,
                Aad::from(Self::number_aad(holder, kind, digest)),
                &mut buf,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    fn digest(&self, kind: CredentialKind, canonical: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.0);
        let k = kind.as_str().as_bytes();
        ctx.update(&(k.len() as u64).to_be_bytes());
        ctx.update(k);
        ctx.update(&(canonical.len() as u64).to_be_bytes());
        ctx.update(canonical.as_bytes());
        ctx.sign().as_ref().to_vec()
    }
}

/// The id of a register row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId(pub i64);

impl std::fmt::Display for CredentialId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One register entry as listed: never the value or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub id: CredentialId,
    pub holder: SubjectId,
    pub kind: CredentialKind,
    /// A label the operator chose ("blue card", "visitor QR"), never the value.
    pub label: String,
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
    pub operator: String,
}

impl CredentialInfo {
    /// Not revoked and not expired at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Why a presented credential does not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialCheck {
    /// Live: the holder passes (no face consent involved).
    Valid(CredentialInfo),
    /// Known but revoked or expired.
    NotLive(CredentialInfo),
    /// Not in the register (or malformed).
    Unknown,
}

const COLUMNS: &str = "id, holder, kind, label, issued_at, expires_at, revoked_at, operator";

type RawInfo = (i64, String, String, String, i64, i64, Option<i64>, String);

fn info_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawInfo> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn to_info(file: &std::path::Path, raw: RawInfo) -> Result<CredentialInfo, StoreError> {
    let (id, holder, kind, label, issued_at, expires_at, revoked_at, operator) = raw;
    let bad = |reason| StoreError::Setting {
        file: file.to_path_buf(),
        key: "credentials",
        reason,
    };
    Ok(CredentialInfo {
        id: CredentialId(id),
        holder: SubjectId::new(holder).map_err(|_| bad("holds an invalid holder id"))?,
        kind: kind
            .parse()
            .map_err(|_| bad("holds an unknown credential kind"))?,
        label,
        issued_at: UnixMillis(issued_at),
        expires_at: UnixMillis(expires_at),
        revoked_at: revoked_at.map(UnixMillis),
        operator,
    })
}

/// Longest operator label of a credential.
pub const MAX_LABEL_LEN: usize = 64;

impl Store {
    /// Issues a credential to `holder` (who needs no face consent, and no subject row): checks
    /// the value against the kind's rules, refuses a value already live for anyone, stores its
    /// keyed digest with an expiry of `[alternatives].credential_days`, and records the issue.
    pub fn issue_credential(
        &mut self,
        holder: &SubjectId,
        kind: CredentialKind,
        value: &str,
        label: &str,
        operator: &str,
    ) -> Result<CredentialInfo, StoreError> {
        let canonical = kind
            .canonical(value)
            .map_err(|source| StoreError::Credential { source })?;
        let label = label.trim();
        if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(StoreError::CredentialLabel { max: MAX_LABEL_LEN });
        }
        let digest = self.cred_key.digest(kind, &canonical);
        let sealed = match kind {
            CredentialKind::Card => Some(
                self.cred_key
                    .seal_number(holder, kind, &digest, &canonical)?,
            ),
            CredentialKind::Pin | CredentialKind::Qr => None,
        };
        let days = self.policy.alternatives().credential_days();
        let info = self.write("issue credential", |tx, ctx| {
            let clash: Option<(String, i64)> = tx
                .query_row(
                    "SELECT holder, expires_at FROM credentials
                     WHERE kind = ?1 AND digest = ?2 AND revoked_at IS NULL",
                    params![kind.as_str(), digest],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(ctx.err("read credentials"))?;
            if let Some((other, expires_at)) = clash {
                if expires_at > ctx.now.0 {
                    return Err(StoreError::CredentialInUse {
                        kind: kind.as_str(),
                        same_holder: other == holder.as_str(),
                    });
                }
                // An expired row the sweep has not removed yet: it goes now.
                tx.execute(
                    "DELETE FROM credentials WHERE kind = ?1 AND digest = ?2",
                    params![kind.as_str(), digest],
                )
                .map_err(ctx.err("remove expired credential"))?;
            }
            let expires_at = ctx.now.plus_days(days);
            tx.execute(
                "INSERT INTO credentials
                     (holder, kind, digest, label, issued_at, expires_at, operator, sealed_value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    holder.as_str(),
                    kind.as_str(),
                    digest,
                    label,
                    ctx.now.0,
                    expires_at.0,
                    operator,
                    sealed
                ],
            )
            .map_err(ctx.err("insert credential"))?;
            let id = CredentialId(tx.last_insert_rowid());
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::CredentialIssue, operator, "ok")
                    .subject(holder)
                    .details(json!({
                        "credential": id.0,
                        "kind": kind.as_str(),
                        "expires_at": expires_at.0,
                    })),
            )?;
            Ok(CredentialInfo {
                id,
                holder: holder.clone(),
                kind,
                label: label.to_owned(),
                issued_at: ctx.now,
                expires_at,
                revoked_at: None,
                operator: operator.to_owned(),
            })
        })?;
        tracing::info!(holder = %holder, credential = info.id.0, kind = kind.as_str(), "credential issued");
        Ok(info)
    }

    /// Revokes the holder's live credentials (all, or one id, or one kind) and records it.
    /// Returns how many were revoked; revoking nothing is an error naming the holder.
    pub fn revoke_credentials(
        &mut self,
        holder: &SubjectId,
        only: Option<CredentialId>,
        kind: Option<CredentialKind>,
        operator: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let n = self.write("revoke credential", |tx, ctx| {
            let n = tx
                .execute(
                    "UPDATE credentials SET revoked_at = ?2
                     WHERE holder = ?1 AND revoked_at IS NULL
                       AND (?3 IS NULL OR id = ?3) AND (?4 IS NULL OR kind = ?4)",
                    params![
                        holder.as_str(),
                        ctx.now.0,
                        only.map(|c| c.0),
                        kind.map(CredentialKind::as_str)
                    ],
                )
                .map_err(ctx.err("revoke credential"))?;
            if n == 0 {
                return Err(StoreError::NoSuchCredential {
                    holder: holder.clone(),
                });
            }
            ctx.audit(
                tx,
                &AuditEvent::new(AuditKind::CredentialRevoke, operator, "ok")
                    .subject(holder)
                    .details(json!({
                        "revoked": n,
                        "credential": only.map(|c| c.0),
                        "kind": kind.map(CredentialKind::as_str),
                        "reason": reason,
                    })),
            )?;
            Ok(n)
        })?;
        tracing::info!(holder = %holder, revoked = n, "credentials revoked");
        Ok(n)
    }

    /// The register, optionally for one holder, oldest first (never values or digests).
    pub fn list_credentials(
        &self,
        holder: Option<&SubjectId>,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM credentials WHERE (?1 IS NULL OR holder = ?1) ORDER BY id"
            ))
            .map_err(StoreError::db_at(&self.file, "read credentials"))?;
        let rows = stmt
            .query_map([holder.map(SubjectId::as_str)], info_from)
            .map_err(StoreError::db_at(&self.file, "read credentials"))?;
        let mut out = Vec::new();
        for r in rows {
            let raw = r.map_err(StoreError::db_at(&self.file, "read credentials"))?;
            out.push(to_info(&self.file, raw)?);
        }
        Ok(out)
    }

    /// Looks a presented credential up (no write; the caller records the decision).
    pub fn check_credential(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> Result<CredentialCheck, StoreError> {
        let Ok(canonical) = kind.canonical(value) else {
            return Ok(CredentialCheck::Unknown);
        };
        let digest = self.cred_key.digest(kind, &canonical);
        let raw = self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM credentials WHERE kind = ?1 AND digest = ?2
                     ORDER BY revoked_at IS NULL DESC, id DESC LIMIT 1"
                ),
                params![kind.as_str(), digest],
                info_from,
            )
            .optional()
            .map_err(StoreError::db_at(&self.file, "read credentials"))?;
        let Some(raw) = raw else {
            return Ok(CredentialCheck::Unknown);
        };
        let info = to_info(&self.file, raw)?;
        Ok(if info.is_live(self.now()) {
            CredentialCheck::Valid(info)
        } else {
            CredentialCheck::NotLive(info)
        })
    }
}

impl Store {
    /// The number of `holder`'s newest live card (revoked and expired ones never), opened from
    /// its sealed copy: what the Wiegand and OSDP outputs report to the panel on a grant.
    /// `None` when the holder has no live card, or only cards issued before numbers were
    /// sealed (schema 4); a sealed number that fails to open is an error (a row edited or moved
    /// to another holder).
    pub fn card_number(&self, holder: &SubjectId) -> Result<Option<String>, StoreError> {
        let now = self.now();
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT digest, sealed_value FROM credentials
                 WHERE holder = ?1 AND kind = 'card' AND revoked_at IS NULL AND expires_at > ?2
                   AND sealed_value IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                params![holder.as_str(), now.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::db_at(&self.file, "read credentials"))?;
        let Some((digest, sealed)) = row else {
            return Ok(None);
        };
        self.cred_key
            .open_number(holder, CredentialKind::Card, &digest, &sealed)
            .map(Some)
            .ok_or_else(|| StoreError::Setting {
                file: self.file.clone(),
                key: "credentials",
                reason: "holds a sealed card number that does not open for its holder",
            })
    }
}

/// The sweep's part: removes credentials past their expiry. Returns how many.
pub(crate) fn sweep(
    tx: &rusqlite::Transaction<'_>,
    file: &std::path::Path,
    now: UnixMillis,
) -> Result<usize, StoreError> {
    tx.execute("DELETE FROM credentials WHERE expires_at <= ?1", [now.0])
        .map_err(StoreError::db_at(file, "sweep credentials"))
}
