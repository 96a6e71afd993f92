//! The admin protocol, apart from the socket: reading one request line with a bound checked
//! *while* reading, and parsing it into a typed [`Request`] whose fields are bounded too. Pure
//! (std and serde only), so the fuzz target `fuzz/fuzz_targets/admin_protocol.rs` compiles this
//! very file.

use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

/// The longest request line, newline excluded.
pub const MAX_LINE: usize = 4096;
/// The longest credential value, subject id, model id or reason in a request.
pub const MAX_FIELD: usize = 256;
/// Photos one `enroll` request may carry, at most.
pub const MAX_PHOTOS: usize = 10;
/// The largest photo an `enroll` request may carry, in bytes.
pub const MAX_PHOTO_BYTES: u64 = 16 << 20;

/// One admin request (`{"op": ...}`); unknown ops and unknown fields are refused. The client
/// (the `facegate` commands) sends the same type the service parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Ops without fields are empty struct variants: serde's `deny_unknown_fields` ignores
    // unit variants of an internally tagged enum, and an unknown field must be refused.
    Status {},
    Subjects {},
    /// Rebuilds the live gallery from the store. `model_id` and `dim`, when given, must be the
    /// running model's: they are checked, never used to build anything.
    ReloadGallery {
        #[serde(default)]
        model_id: Option<String>,
        #[serde(default)]
        dim: Option<u64>,
    },
    Credential {
        kind: CredentialKind,
        value: String,
    },
    Override {},
    Withdraw {
        subject: String,
    },
    Delete {
        subject: String,
        #[serde(default)]
        reason: Option<String>,
    },
    AuditVerify {},
    /// The notice for the terminal's screen (Art. 5): text in `lang` (default language when
    /// absent), signage, retention statement, version and fingerprint.
    Notice {
        #[serde(default)]
        lang: Option<String>,
    },
    /// Enrolls a person at the running service (operators): from the service's own camera
    /// (`source`, which must be the one the service reads) with its count-down on the events
    /// stream, or from photos whose bytes follow the line (`photo_bytes`: the size of each, in
    /// order). The consent is recorded with the enrollment, as `facegate enroll` does.
    Enroll(Box<EnrollRequest>),
}

/// The fields of an `enroll` request (see [`Request::Enroll`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub subject: String,
    /// Age in years, from the enrollment record.
    pub age: u8,
    /// How consent was given (`written`, `electronic`, `terminal`, as `--method`).
    pub method: String,
    /// The operator taking the consent (recorded with the peer's uid).
    pub operator: String,
    #[serde(default)]
    pub guardian_id: Option<String>,
    #[serde(default)]
    pub guardian_relation: Option<String>,
    /// The live source the operator named: must be the running service's own.
    #[serde(default)]
    pub source: Option<String>,
    /// Samples to take from the camera (1..=10).
    #[serde(default = "default_samples")]
    pub samples: u8,
    /// Sizes of the photos that follow the line, in order.
    #[serde(default)]
    pub photo_bytes: Vec<u64>,
    /// Photo names for messages (the operator's file names), in order.
    #[serde(default)]
    pub photo_names: Vec<String>,
    /// In photos with several faces: face N (1-based), or the largest.
    #[serde(default)]
    pub face: Option<u32>,
    #[serde(default)]
    pub largest: bool,
    #[serde(default)]
    pub id_photo: bool,
    #[serde(default)]
    pub allow_duplicate_of: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn default_samples() -> u8 {
    3
}

/// The alternative credentials a request can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Pin,
    Card,
    Qr,
}

impl Request {
    /// The op's name, for audit records and errors.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Status {} => "status",
            Self::Subjects {} => "subjects",
            Self::ReloadGallery { .. } => "reload_gallery",
            Self::Credential { .. } => "credential",
            Self::Override {} => "override",
            Self::Withdraw { .. } => "withdraw",
            Self::Delete { .. } => "delete",
            Self::AuditVerify {} => "audit_verify",
            Self::Notice { .. } => "notice",
            Self::Enroll(_) => "enroll",
        }
    }

    /// Whether the op needs the admin role (operators may do the rest).
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            Self::Withdraw { .. } | Self::Delete { .. } | Self::AuditVerify {}
        )
    }

    /// Parses one line (without its newline). Every string field is at most [`MAX_FIELD`]
    /// bytes; the error says which field is wrong, never echoes the value.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let req: Self = serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))?;
        let long = |name: &str, v: &str| {
            if v.len() > MAX_FIELD {
                Err(format!("{name} is longer than {MAX_FIELD} bytes"))
            } else {
                Ok(())
            }
        };
        match &req {
            Self::ReloadGallery { model_id, .. } => {
                long("model_id", model_id.as_deref().unwrap_or_default())?;
            }
            Self::Credential { value, .. } => long("value", value)?,
            Self::Withdraw { subject } => long("subject", subject)?,
            Self::Notice { lang } => long("lang", lang.as_deref().unwrap_or_default())?,
            Self::Delete { subject, reason } => {
                long("subject", subject)?;
                long("reason", reason.as_deref().unwrap_or_default())?;
            }
            Self::Enroll(e) => {
                long("subject", &e.subject)?;
                long("method", &e.method)?;
                long("operator", &e.operator)?;
                long("guardian_id", e.guardian_id.as_deref().unwrap_or_default())?;
                long(
                    "guardian_relation",
                    e.guardian_relation.as_deref().unwrap_or_default(),
                )?;
                long("source", e.source.as_deref().unwrap_or_default())?;
                long(
                    "allow_duplicate_of",
                    e.allow_duplicate_of.as_deref().unwrap_or_default(),
                )?;
                long("reason", e.reason.as_deref().unwrap_or_default())?;
                if !(1..=10).contains(&e.samples) {
                    return Err("samples must lie in 1..=10".into());
                }
                if e.photo_bytes.len() > MAX_PHOTOS {
                    return Err(format!("at most {MAX_PHOTOS} photos a request"));
                }
                if e.photo_bytes.iter().any(|&n| n == 0 || n > MAX_PHOTO_BYTES) {
                    return Err(format!("each photo must hold 1..={MAX_PHOTO_BYTES} bytes"));
                }
                if e.photo_names.len() > e.photo_bytes.len() {
                    return Err("more photo names than photos".into());
                }
                for n in &e.photo_names {
                    long("photo_names", n)?;
                }
                if e.source.is_some() != e.photo_bytes.is_empty() {
                    return Err("an enrollment takes either a source or photos".into());
                }
            }
            _ => {}
        }
        Ok(req)
    }
}

/// The outcome of reading one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line (newline removed).
    Complete(Vec<u8>),
    /// The peer closed the connection (a partial last line is dropped).
    Closed,
    /// More than `max` bytes came without a newline; at most `max` plus one buffer were read.
    TooLong,
}

/// Reads one `\n`-terminated line of at most `max` bytes, checking the bound after each buffer
/// the reader hands over, so a peer that never sends a newline costs `max` bytes plus the
/// reader's buffer, not the length of its line. `before_read` runs before each refill (the
/// socket uses it to shrink its read timeout to the request's deadline, and fails with
/// `TimedOut` once it has passed).
pub fn read_line<R: BufRead>(
    reader: &mut R,
    max: usize,
    before_read: &mut dyn FnMut() -> io::Result<()>,
) -> io::Result<Line> {
    let mut line = Vec::new();
    loop {
        before_read()?;
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::Closed);
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if line.len() + i > max {
                return Ok(Line::TooLong);
            }
            line.extend_from_slice(&buf[..i]);
            reader.consume(i + 1);
            return Ok(Line::Complete(line));
        }
        let n = buf.len();
        if line.len() + n > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(buf);
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor};

    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = BufReader::with_capacity(16, Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, max, &mut || Ok(())).unwrap();
            let done = !matches!(l, Line::Complete(_));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    #[test]
    fn lines_are_split_and_bounded_while_reading() {
        assert_eq!(
            lines(b"ab\ncd\n", 8),
            [
                Line::Complete(b"ab".to_vec()),
                Line::Complete(b"cd".to_vec()),
                Line::Closed
            ]
        );
        // Exactly `max` bytes is allowed; one more is not, whether or not a newline follows.
        assert_eq!(
            lines(b"12345678\n", 8)[0],
            Line::Complete(b"12345678".to_vec())
        );
        assert_eq!(lines(b"123456789\n", 8)[0], Line::TooLong);
        assert_eq!(lines(&[b'x'; 100], 8), [Line::TooLong]);
        assert_eq!(lines(b"partial", 8), [Line::Closed]);
    }

    #[test]
    fn a_huge_line_is_refused_after_reading_about_max_bytes() {
        // A reader that counts what is taken from it and would go on for a gigabyte.
        struct Endless(usize);
        impl io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'a');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let mut r = BufReader::with_capacity(1024, Endless(0));
        assert_eq!(
            read_line(&mut r, MAX_LINE, &mut || Ok(())).unwrap(),
            Line::TooLong
        );
        assert!(r.get_ref().0 <= MAX_LINE + 1024, "{}", r.get_ref().0);
    }

    #[test]
    fn requests_parse_into_typed_ops_and_bad_ones_are_refused() {
        assert_eq!(
            Request::parse(br#"{"op":"status"}"#),
            Ok(Request::Status {})
        );
        assert_eq!(
            Request::parse(br#"{"op":"reload_gallery","model_id":"m","dim":512}"#),
            Ok(Request::ReloadGallery {
                model_id: Some("m".into()),
                dim: Some(512)
            })
        );
        assert!(Request::parse(br#"{"op":"reload_gallery","dim":-1}"#).is_err());
        assert!(Request::parse(br#"{"op":"reload_gallery","dim":1e300}"#).is_err());
        assert!(Request::parse(br#"{"op":"status","extra":1}"#).is_err());
        assert!(Request::parse(br#"{"op":"format_disk"}"#).is_err());
        assert!(Request::parse(br#"{"op":"credential","kind":"iris","value":"1"}"#).is_err());
        let long = format!(r#"{{"op":"withdraw","subject":"{}"}}"#, "a".repeat(300));
        let err = Request::parse(long.as_bytes()).unwrap_err();
        assert!(err.contains("subject") && !err.contains("aaaa"), "{err}");
        assert!(Request::parse(b"\xff\xfe").is_err());
        assert!(
            Request::parse(br#"{"op":"delete","subject":"s"}"#)
                .unwrap()
                .needs_admin()
        );
        assert!(
            !Request::parse(br#"{"op":"override"}"#)
                .unwrap()
                .needs_admin()
        );
    }
}
