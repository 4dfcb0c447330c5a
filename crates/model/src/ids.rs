//! Identifiers. A `RunId` is always 32 lowercase hex digits (a uuid4 without dashes, as MLflow uses), checked
//! when parsed, so code holding one never re-validates it.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A run's id: 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

impl RunId {
    /// A fresh random id.
    pub fn new() -> Self {
        RunId(uuid::Uuid::new_v4().simple().to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for RunId {
    type Err = Error;
    /// Accepts 32 hex digits in either case (stored lowercase); anything else is an error naming the rule.
    fn from_str(s: &str) -> Result<Self> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(RunId(s.to_ascii_lowercase()))
        } else {
            Err(Error::invalid(
                "run_id",
                format!("'{}' is not a run id (32 hex characters)", truncate(s, 80)),
            ))
        }
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<RunId>()
            .map_err(|e| serde::de::Error::custom(e.reason()))
    }
}

/// An experiment's id: a non-negative integer (MLflow sends it as a string; "0" is the Default experiment).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct ExperimentId(pub i64);

impl ExperimentId {
    /// The experiment that always exists, named "Default".
    pub const DEFAULT: ExperimentId = ExperimentId(0);
}

impl FromStr for ExperimentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(ExperimentId)
            .ok_or_else(|| {
                Error::invalid(
                    "experiment_id",
                    format!(
                        "'{}' is not an experiment id (a non-negative integer)",
                        truncate(s, 80)
                    ),
                )
            })
    }
}

impl fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Serialized as a string, as MLflow does, but read from a string or a number.
impl Serialize for ExperimentId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for ExperimentId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(ExperimentIdVisitor)
    }
}

/// Reads an experiment id from a non-negative integer or its text, and says which rule anything else breaks.
struct ExperimentIdVisitor;

impl serde::de::Visitor<'_> for ExperimentIdVisitor {
    type Value = ExperimentId;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an experiment id (a non-negative integer, or one as text)")
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<ExperimentId, E> {
        if n >= 0 {
            Ok(ExperimentId(n))
        } else {
            Err(E::custom(format!("experiment id {n} is negative")))
        }
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<ExperimentId, E> {
        i64::try_from(n)
            .map(ExperimentId)
            .map_err(|_| E::custom(format!("experiment id {n} is too large")))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<ExperimentId, E> {
        s.parse::<ExperimentId>().map_err(|e| E::custom(e.reason()))
    }
}

pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// FNV-1a: hashes that stay the same across builds and platforms, for ids and names made from user text that
/// are stored (an imported folder's run id, a file's batch ids, an image folder, a document id), where the text
/// itself is too long or not a plain name. Not for security. 64 bits where a name only needs to differ from its
/// neighbours' (an image folder also carries the name's text).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// [`fnv1a64`]'s 128-bit form, where an id must not collide with any other.
pub fn fnv1a128(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, |h, &b| {
            (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_hashes_are_the_published_fnv_1a() {
        // Stored ids and names depend on these values: they must never change.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a128(b"a"), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        assert_eq!(
            fnv1a128(b"flightlog"),
            0x27ad_0a7d_7806_1471_7c46_ef6b_4562_a6f3
        );
    }

    #[test]
    fn run_ids_are_32_hex() {
        let id = RunId::new();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<RunId>().unwrap(), id);
        assert_eq!(
            "ABCDEF0123456789abcdef0123456789"
                .parse::<RunId>()
                .unwrap()
                .as_str(),
            "abcdef0123456789abcdef0123456789"
        );
        let err = "nope".parse::<RunId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid run_id: 'nope' is not a run id (32 hex characters)"
        );
    }

    #[test]
    fn experiment_ids_read_numbers_and_strings() {
        let a: ExperimentId = serde_json::from_str("\"12\"").unwrap();
        let b: ExperimentId = serde_json::from_str("12").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"12\"");
        assert!(serde_json::from_str::<ExperimentId>("\"-1\"").is_err());
        assert!("x".parse::<ExperimentId>().is_err());
        let err = |json: &str| {
            serde_json::from_str::<ExperimentId>(json)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("\"x\""),
            "'x' is not an experiment id (a non-negative integer) at line 1 column 3"
        );
        assert!(
            err("1e20")
                .starts_with("invalid type: floating point `1e+20`, expected an experiment id"),
            "{}",
            err("1e20")
        );
        assert!(err("18446744073709551615")
            .starts_with("experiment id 18446744073709551615 is too large"));
        assert!(err("-3").starts_with("experiment id -3 is negative"));
        let run = serde_json::from_str::<RunId>("\"zz\"")
            .unwrap_err()
            .to_string();
        assert!(run.starts_with("'zz' is not a run id"), "{run}");
        let parent = "zz".parse::<RunId>().unwrap_err().for_field("parent_id");
        assert_eq!(
            parent.to_string(),
            "invalid parent_id: 'zz' is not a run id (32 hex characters)"
        );
    }
}
