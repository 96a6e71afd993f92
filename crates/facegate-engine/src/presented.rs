//! Alternative credentials (Art. 10) as presented at the gate: PIN, card number, QR payload and
//! operator override. Which holder a value belongs to is the store's credential register
//! (`facegate_store::Store::check_credential`); the engine never holds a value longer than the
//! decision takes.

use std::fmt;

use facegate_policy::CredentialKind;

use crate::decision::Method;

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

    /// The secret part and its kind, `None` for an override.
    pub fn secret(&self) -> Option<(CredentialKind, &str)> {
        match self {
            Self::Pin(v) => Some((CredentialKind::Pin, v)),
            Self::Card(v) => Some((CredentialKind::Card, v)),
            Self::Qr(v) => Some((CredentialKind::Qr, v)),
            Self::OperatorOverride { .. } => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", Credential::Pin("4321".into()));
        assert!(!text.contains("4321"), "{text}");
        let text = format!("{:?}", Credential::Card("CARD99".into()));
        assert!(!text.contains("CARD99"), "{text}");
        assert_eq!(
            Credential::Qr("x".into()).secret(),
            Some((CredentialKind::Qr, "x"))
        );
        assert_eq!(
            Credential::OperatorOverride {
                operator: "guard".into()
            }
            .secret(),
            None
        );
    }
}
