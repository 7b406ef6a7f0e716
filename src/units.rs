//! Human units in configuration files: durations written as `2s`, `500ms`,
//! `1m` (humantime). At the bottom of the crate's layers, beside `format`
//! and `store`: every module that owns a `Duration` option deserializes it
//! with [`duration`], so none of them needs `config`.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

/// A duration like `2s`, `500ms`, `1m` (humantime), for
/// `#[serde(deserialize_with = "crate::units::duration")]`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| de::Error::custom(format!("duration {s:?}: {e}")))
}
