//! The master key: where it comes from, how it is checked, and how a new one is made.
//!
//! The master key never lives in the database. It comes from a systemd credential
//! ([`KeySource::SystemdCredential`], which systemd can seal with the TPM) or from a key file
//! ([`KeySource::File`]) that must be mode 0600 and owned by the service user. The database only
//! records the key's [`KeyId`] (the first 8 bytes of its SHA-256, in hex), so that a wrong key is
//! reported as such instead of as a pile of undecryptable rows.
//!
//! The master key encrypts nothing directly: two key-encryption keys are derived from it with
//! HKDF-SHA256 (one wraps the per-subject data keys, one wraps the audit key), see `crate::seal`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::StoreError;

/// Length of a master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// The 256-bit master key. Zeroised on drop; its `Debug` shows only the [`KeyId`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

/// Where the master key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/<name>`, as set up by systemd's `LoadCredential=` or
    /// `LoadCredentialEncrypted=` (TPM-sealed).
    SystemdCredential { name: String },
    /// A key file: mode 0600, owned by the effective user id of this process.
    File(PathBuf),
}

/// The public fingerprint of a master key: the first 8 bytes of its SHA-256, as 16 hex digits.
///
/// Safe to log and to store: it identifies which key is meant, it does not help recover it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The 16 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl MasterKey {
    /// Wraps 32 bytes obtained elsewhere (a hardware key provider, a test).
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Random { what: "master key" })?;
        Ok(Self(bytes))
    }

    /// Loads the key from `source`, checking the key file's mode and owner first.
    pub fn load(source: &KeySource) -> Result<Self, StoreError> {
        match source {
            KeySource::SystemdCredential { name } => {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    return Err(StoreError::CredentialUnavailable {
                        name: name.clone(),
                        reason: "CREDENTIALS_DIRECTORY is not set; add \
                                 `LoadCredentialEncrypted=<name>:<path>` (or `LoadCredential=`) \
                                 to the service unit"
                            .to_owned(),
                    });
                };
                if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                    return Err(StoreError::CredentialUnavailable {
                        name: name.clone(),
                        reason: "a credential name is a plain file name".to_owned(),
                    });
                }
                let path = Path::new(&dir).join(name);
                // systemd makes credentials readable by the service only; no mode check here.
                let bytes = read_limited(&path)?;
                Self::parse(&bytes).map_err(|reason| StoreError::KeyFormat { path, reason })
            }
            KeySource::File(path) => {
                check_key_file(path)?;
                let bytes = read_limited(path)?;
                Self::parse(&bytes).map_err(|reason| StoreError::KeyFormat {
                    path: path.clone(),
                    reason,
                })
            }
        }
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        KeyId(hex::encode(&d.as_ref()[..8]))
    }

    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }

    /// 64 hex digits (surrounding whitespace allowed) or exactly 32 raw bytes.
    fn parse(bytes: &[u8]) -> Result<Self, &'static str> {
        let trimmed = bytes.trim_ascii();
        let mut key = [0u8; MASTER_KEY_LEN];
        if trimmed.len() == 2 * MASTER_KEY_LEN && trimmed.iter().all(u8::is_ascii_hexdigit) {
            hex::decode_to_slice(trimmed, &mut key).map_err(|_| "invalid hex")?;
            return Ok(Self(key));
        }
        if bytes.len() == MASTER_KEY_LEN {
            key.copy_from_slice(bytes);
            return Ok(Self(key));
        }
        Err("expected 64 hex digits (optionally followed by a newline) or 32 raw bytes")
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={}, <redacted>)", self.id())
    }
}

/// Creates a new random master key at `path` as 64 hex digits and a newline, mode 0600, owned by
/// the current user. Refuses to overwrite an existing file. The file is written under a temporary
/// name in the same directory and linked into place, so a crash never leaves a half-written key.
pub fn generate_key_file(path: &Path) -> Result<KeyId, StoreError> {
    let key = MasterKey::generate()?;
    let mut text = Zeroizing::new(hex::encode(key.bytes()).into_bytes());
    text.push(b'\n');

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".to_owned());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let written = f.write_all(&text).and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io {
                path: tmp,
                source: e,
            });
        }
    }
    // link(2) fails if `path` exists: no overwrite, no race.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(StoreError::KeyFileExists {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    }
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    let id = key.id();
    tracing::info!(key_id = %id, "generated a new master key file");
    Ok(id)
}

/// Refuses a key file that others can read or write, or that belongs to another user.
fn check_key_file(path: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(StoreError::KeyFormat {
            path: path.to_path_buf(),
            reason: "not a regular file",
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(StoreError::KeyFileOwner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// Reads at most a little more than a hex key, so a wrong path to a huge file fails fast.
fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(128));
    f.take(256).read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn parses_hex_and_raw() {
        let hex_key = format!("{}\n", "ab".repeat(32));
        let k = MasterKey::parse(hex_key.as_bytes()).unwrap();
        assert_eq!(k.bytes(), &[0xab; 32]);
        let raw = MasterKey::parse(&[7u8; 32]).unwrap();
        assert_eq!(raw.bytes(), &[7u8; 32]);
        assert!(MasterKey::parse(b"too short").is_err());
        assert!(MasterKey::parse(&[1u8; 33]).is_err());
    }

    #[test]
    fn debug_shows_only_the_id() {
        let k = MasterKey::from_bytes([1u8; 32]);
        let text = format!("{k:?}");
        assert!(text.contains(k.id().as_str()));
        assert!(!text.contains("0101"));
        assert_eq!(k.id().as_str().len(), 16);
    }

    #[test]
    fn generated_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let id = generate_key_file(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let k = MasterKey::load(&KeySource::File(path.clone())).unwrap();
        assert_eq!(k.id(), id);
        let err = generate_key_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::KeyFileExists { .. }), "{err}");
        // The original key is untouched.
        assert_eq!(MasterKey::load(&KeySource::File(path)).unwrap().id(), id);
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn credential_is_read_from_credentials_directory() {
        // Only this test touches CREDENTIALS_DIRECTORY in this binary.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("facegate-master"), "cd".repeat(32)).unwrap();
        // SAFETY: single test manipulating this variable; other tests do not read it.
        unsafe { std::env::set_var("CREDENTIALS_DIRECTORY", dir.path()) };
        let k = MasterKey::load(&KeySource::SystemdCredential {
            name: "facegate-master".into(),
        })
        .unwrap();
        assert_eq!(k.bytes(), &[0xcd; 32]);
        let err = MasterKey::load(&KeySource::SystemdCredential {
            name: "../etc/passwd".into(),
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::CredentialUnavailable { .. }));
        unsafe { std::env::remove_var("CREDENTIALS_DIRECTORY") };
    }
}
