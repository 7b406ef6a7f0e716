//! Snapshot names.
//!
//! A snapshot name becomes part of object keys (`snapshots/<name>/index`) and
//! of file names in a mount (`<name>.img`), so it is validated once, here, and
//! the rest of the code only ever sees a [`SnapshotName`]. The rules are
//! deliberately narrow: `[A-Za-z0-9._-]`, 1 to [`MAX_NAME_LEN`] characters,
//! starting with a letter or a digit (which refuses `.`, `..`, hidden names,
//! and `-rf`, which a later command line would read as flags). That
//! excludes `/`, control characters, spaces and anything an object store or
//! a shell would treat specially.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Long enough for `db-prod-2026-11-24T06.00.00Z`-style names, short enough
/// to keep object keys well under S3's 1024-byte limit.
pub const MAX_NAME_LEN: usize = 128;

/// A validated snapshot name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotName(String);

impl SnapshotName {
    /// Validates `s`; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("snapshot name is empty".into());
        }
        if s.len() > MAX_NAME_LEN {
            return Err(format!(
                "snapshot name is {} bytes long, the limit is {MAX_NAME_LEN}",
                s.len()
            ));
        }
        if let Some(c) = s.chars().next().filter(|c| !c.is_ascii_alphanumeric()) {
            return Err(format!(
                "snapshot name {s:?} starts with {c:?}; a name starts with a letter or a digit"
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "snapshot name {s:?} contains {c:?}; only A-Z a-z 0-9 . _ - are allowed"
            ));
        }
        Ok(SnapshotName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SnapshotName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SnapshotName::parse(s)
    }
}

impl<'de> Deserialize<'de> for SnapshotName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SnapshotName::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["demo", "db-prod_2026.11.24", "A", "x.img", "0day", "a-rf"] {
            assert!(SnapshotName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_dangerous_names() {
        for n in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "a b",
            "tab\there",
            "nl\n",
            "é",
            "a\0b",
            "-rf",
            "--help",
            "_x",
        ] {
            assert!(SnapshotName::parse(n).is_err(), "{n:?} accepted");
        }
        assert!(SnapshotName::parse(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }
}
