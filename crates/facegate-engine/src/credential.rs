//! Alternative credentials (Art. 10): PIN, card number, QR payload and operator override, and
//! the directory that maps a credential to the subject it belongs to.
//!
//! The directory never holds a credential in clear: each entry is the SHA-256 of a
//! domain-separated encoding of (salt, kind, value). A 4-6 digit PIN has so few values that its
//! hash can be reversed by trying them all, so the directory file is protected like the key file
//! (0600, state directory); the salt only stops one precomputed table serving every terminal.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use facegate_types::SubjectId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::EngineError;
use crate::decision::Method;

/// Longest credential value accepted (a QR payload can be long; anything longer is refused).
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// A credential presented at the gate. `Debug` never shows the secret value.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    Pin(String),
    Card(String),
    Qr(String),
    /// A guard or operator opens the gate; `operator` is who (recorded in the audit log).
    OperatorOverride {
        operator: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pin(_) => f.write_str("Pin(<redacted>)"),
            Self::Card(_) => f.write_str("Card(<redacted>)"),
            Self::Qr(_) => f.write_str("Qr(<redacted>)"),
            Self::OperatorOverride { operator } => f
                .debug_struct("OperatorOverride")
                .field("operator", operator)
                .finish(),
        }
    }
}

impl Credential {
    /// The decision method this credential stands for.
    pub fn method(&self) -> Method {
        match self {
            Self::Pin(_) => Method::Pin,
            Self::Card(_) => Method::Card,
            Self::Qr(_) => Method::Qr,
            Self::OperatorOverride { .. } => Method::Override,
        }
    }

    /// The secret part and its kind name, `None` for an override.
    fn secret(&self) -> Option<(CredentialKind, &str)> {
        match self {
            Self::Pin(v) => Some((CredentialKind::Pin, v)),
            Self::Card(v) => Some((CredentialKind::Card, v)),
            Self::Qr(v) => Some((CredentialKind::Qr, v)),
            Self::OperatorOverride { .. } => None,
        }
    }
}

/// The kinds of credential a directory maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Pin,
    Card,
    Qr,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pin => "pin",
            Self::Card => "card",
            Self::Qr => "qr",
        }
    }
}

/// Maps a credential to the subject it belongs to.
pub trait CredentialDirectory: Send + fmt::Debug {
    /// The subject `credential` belongs to, `None` if unknown (or an override).
    fn lookup(&self, credential: &Credential) -> Option<SubjectId>;
}

/// The file form of a [`HashedDirectory`]:
///
/// ```toml
/// salt = "5f2c..."                  # hex, per terminal
/// [[credential]]
/// kind = "pin"                      # pin | card | qr
/// sha256 = "9a0e..."                # HashedDirectory::digest_hex(salt, credential)
/// subject = "emp-00042"
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    #[serde(default)]
    pub salt: String,
    #[serde(default, rename = "credential")]
    pub credentials: Vec<RawEntry>,
}

/// One line of a [`RawDirectory`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub kind: CredentialKind,
    pub sha256: String,
    pub subject: SubjectId,
}

/// An in-memory directory of hashed credentials, loadable from and savable to TOML.
#[derive(Clone, Default)]
pub struct HashedDirectory {
    salt: Vec<u8>,
    entries: HashMap<(CredentialKind, [u8; 32]), SubjectId>,
}

impl fmt::Debug for HashedDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashedDirectory")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl HashedDirectory {
    /// An empty directory hashing with `salt`.
    pub fn new(salt: impl Into<Vec<u8>>) -> Self {
        Self {
            salt: salt.into(),
            entries: HashMap::new(),
        }
    }

    /// The digest a credential is stored under: SHA-256 of a tag, the salt, the kind and the
    /// value, each length-prefixed. `None` for an override (it is not a directory entry).
    pub fn digest(salt: &[u8], credential: &Credential) -> Option<[u8; 32]> {
        let (kind, value) = credential.secret()?;
        let mut h = Sha256::new();
        for part in [
            b"facegate-credential/v1".as_slice(),
            salt,
            kind.as_str().as_bytes(),
            value.trim().as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&h.finalize());
        Some(out)
    }

    /// [`HashedDirectory::digest`] in hex, for writing a directory file.
    pub fn digest_hex(salt: &[u8], credential: &Credential) -> Option<String> {
        Self::digest(salt, credential).map(hex::encode)
    }

    /// Adds (or replaces) the mapping of `credential` to `subject`. Refuses an override and an
    /// empty or over-long value.
    pub fn insert(
        &mut self,
        credential: &Credential,
        subject: SubjectId,
    ) -> Result<(), EngineError> {
        let Some((kind, value)) = credential.secret() else {
            return Err(EngineError::Config {
                field: "credential",
                reason: "an operator override is not a directory entry".into(),
            });
        };
        check_value(value)?;
        if let Some(d) = Self::digest(&self.salt, credential) {
            self.entries.insert((kind, d), subject);
        }
        Ok(())
    }

    /// Removes every credential of `subject`; returns how many.
    pub fn remove_subject(&mut self, subject: &SubjectId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, s| s != subject);
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Builds a directory from its file form.
    pub fn from_raw(raw: RawDirectory, path: &Path) -> Result<Self, EngineError> {
        let bad = |reason: String| EngineError::Directory {
            path: path.to_path_buf(),
            reason,
        };
        let salt = hex::decode(raw.salt.trim()).map_err(|e| bad(format!("salt: {e}")))?;
        let mut entries = HashMap::new();
        for (i, e) in raw.credentials.into_iter().enumerate() {
            let bytes = hex::decode(e.sha256.trim())
                .map_err(|err| bad(format!("credential {i}: sha256: {err}")))?;
            let digest: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad(format!("credential {i}: sha256 is not 32 bytes")))?;
            entries.insert((e.kind, digest), e.subject);
        }
        Ok(Self { salt, entries })
    }

    /// The file form (digests only).
    pub fn to_raw(&self) -> RawDirectory {
        let mut credentials: Vec<RawEntry> = self
            .entries
            .iter()
            .map(|((kind, d), s)| RawEntry {
                kind: *kind,
                sha256: hex::encode(d),
                subject: s.clone(),
            })
            .collect();
        credentials.sort_by(|a, b| (&a.subject, &a.sha256).cmp(&(&b.subject, &b.sha256)));
        RawDirectory {
            salt: hex::encode(&self.salt),
            credentials,
        }
    }

    /// Reads a TOML directory file.
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::Directory {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let raw: RawDirectory = toml::from_str(&text).map_err(|e| EngineError::Directory {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_raw(raw, path)
    }

    /// Writes the directory as TOML (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), EngineError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |reason: String| EngineError::Directory {
            path: path.to_path_buf(),
            reason,
        };
        let text = toml::to_string(&self.to_raw()).map_err(|e| err(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(text.as_bytes()).map_err(|e| err(e.to_string()))
    }
}

fn check_value(value: &str) -> Result<(), EngineError> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_CREDENTIAL_LEN {
        return Err(EngineError::Config {
            field: "credential",
            reason: format!("value must be 1 to {MAX_CREDENTIAL_LEN} bytes"),
        });
    }
    Ok(())
}

impl CredentialDirectory for HashedDirectory {
    fn lookup(&self, credential: &Credential) -> Option<SubjectId> {
        let (kind, value) = credential.secret()?;
        if check_value(value).is_err() {
            return None;
        }
        let d = Self::digest(&self.salt, credential)?;
        self.entries.get(&(kind, d)).cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(id: &str) -> SubjectId {
        SubjectId::new(id).unwrap()
    }

    #[test]
    fn lookup_by_kind_and_value() {
        let mut d = HashedDirectory::new(b"salt".to_vec());
        d.insert(&Credential::Pin("1234".into()), s("alice"))
            .unwrap();
        d.insert(&Credential::Card("04A1B2".into()), s("bob"))
            .unwrap();
        assert_eq!(d.lookup(&Credential::Pin("1234".into())), Some(s("alice")));
        assert_eq!(
            d.lookup(&Credential::Pin(" 1234\n".into())),
            Some(s("alice"))
        );
        // Same value, other kind: not the same credential.
        assert_eq!(d.lookup(&Credential::Card("1234".into())), None);
        assert_eq!(d.lookup(&Credential::Pin("0000".into())), None);
        assert_eq!(
            d.lookup(&Credential::OperatorOverride {
                operator: "guard".into()
            }),
            None
        );
        assert_eq!(d.remove_subject(&s("alice")), 1);
        assert_eq!(d.lookup(&Credential::Pin("1234".into())), None);
    }

    #[test]
    fn file_round_trip_holds_no_clear_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.toml");
        let mut d = HashedDirectory::new(b"terminal-7".to_vec());
        d.insert(&Credential::Pin("987654".into()), s("carol"))
            .unwrap();
        d.insert(&Credential::Qr("QR-PAYLOAD-XYZ".into()), s("dave"))
            .unwrap();
        d.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("987654") && !text.contains("QR-PAYLOAD"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "directory file must not be group/world readable"
        );
        let back = HashedDirectory::load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            back.lookup(&Credential::Pin("987654".into())),
            Some(s("carol"))
        );
        assert_eq!(
            back.lookup(&Credential::Qr("QR-PAYLOAD-XYZ".into())),
            Some(s("dave"))
        );
    }

    #[test]
    fn bad_files_and_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "salt = \"00\"\n[[credential]]\nkind = \"pin\"\nsha256 = \"abcd\"\nsubject = \"x\"\n",
        )
        .unwrap();
        let err = HashedDirectory::load(&path).unwrap_err().to_string();
        assert!(err.contains("not 32 bytes"), "{err}");
        std::fs::write(&path, "salt = \"00\"\npin = 1\n").unwrap();
        assert!(HashedDirectory::load(&path).is_err());
        let mut d = HashedDirectory::default();
        assert!(d.insert(&Credential::Pin(String::new()), s("x")).is_err());
        assert!(
            d.insert(
                &Credential::OperatorOverride {
                    operator: "g".into()
                },
                s("x")
            )
            .is_err()
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", Credential::Pin("4321".into()));
        assert!(!text.contains("4321"), "{text}");
        let text = format!("{:?}", Credential::Card("CARD99".into()));
        assert!(!text.contains("CARD99"), "{text}");
    }
}
