use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// The opaque id of an enrolled person (an employee or card number, never a name).
///
/// 1 to 64 characters from `A-Z a-z 0-9 . _ : -`, so it is safe in logs, file names and SQL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectId(String);

impl SubjectId {
    pub fn new(id: impl Into<String>) -> Result<Self, TypesError> {
        let id = id.into();
        if id.is_empty() {
            return Err(TypesError::SubjectId { reason: "empty" });
        }
        if id.len() > 64 {
            return Err(TypesError::SubjectId {
                reason: "longer than 64 characters",
            });
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(TypesError::SubjectId {
                reason: "character outside the allowed set",
            });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SubjectId {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for SubjectId {
    type Error = TypesError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<SubjectId> for String {
    fn from(id: SubjectId) -> Self {
        id.0
    }
}

/// The id of one stored template (a row id in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TemplateId(pub u64);

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_ids_are_validated() {
        assert!(SubjectId::new("emp-00042").is_ok());
        assert!(SubjectId::new("").is_err());
        assert!(SubjectId::new("a b").is_err());
        assert!(SubjectId::new("x'; DROP TABLE subjects;--").is_err());
        assert!(SubjectId::new("x".repeat(65)).is_err());
        let parsed: Result<SubjectId, _> = serde_json::from_str("\"bad id\"");
        assert!(parsed.is_err());
    }
}
