//! Validation rules shared by every API. Limits are far above what the run-history API allowed (50 metrics,
//! 15 columns...) but still bounded, so no single request can exhaust the server.

use crate::error::{Error, Result};
use crate::ids::truncate;

/// Longest metric, tag, property, param or column name, in bytes.
pub const MAX_NAME_BYTES: usize = 500;
/// Longest tag, property or param value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest display name / experiment name, in bytes.
pub const MAX_TITLE_BYTES: usize = 500;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 256 * 1024;
/// Longest single text point, in bytes.
pub const MAX_TEXT_POINT_BYTES: usize = 1024 * 1024;
/// Longest artifact path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest log stream name.
pub const MAX_STREAM_NAME_BYTES: usize = 100;
/// Largest single log append, in bytes.
pub const MAX_LOG_APPEND_BYTES: usize = 16 * 1024 * 1024;

/// A name (metric, tag key, property key, param key, column): non-empty, bounded, no control characters.
/// Unicode is welcome.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.trim() != value {
        return Err(Error::invalid(
            field,
            format!(
                "'{}' has leading or trailing whitespace",
                truncate(value, 80)
            ),
        ));
    }
    bounded(field, value, MAX_NAME_BYTES)?;
    no_control_chars(field, value)
}

/// A title (experiment name, display name): like a name.
pub fn title(field: &str, value: &str) -> Result<()> {
    name(field, value)?;
    bounded(field, value, MAX_TITLE_BYTES)
}

/// A value (tag, property, param): bounded; may be empty; may contain newlines and tabs.
pub fn value(field: &str, value: &str) -> Result<()> {
    bounded(field, value, MAX_VALUE_BYTES)
}

pub fn description(field: &str, value: &str) -> Result<()> {
    bounded(field, value, MAX_DESCRIPTION_BYTES)
}

/// A log stream name: letters, digits, `_`, `-`, `.`; 1 to 100 characters.
pub fn stream_name(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_STREAM_NAME_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && !value.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "stream",
            format!(
                "'{}' is not a log stream name (1-100 of letters, digits, '_', '-', '.')",
                truncate(value, 80)
            ),
        ))
    }
}

/// Longest folder or file name in an artifact path: what filesystems allow (NAME_MAX).
pub const MAX_PATH_SEGMENT_BYTES: usize = 255;

/// Checks an artifact path and returns it normalized ('/'-separated, no empty or '.' segments). Rejects
/// absolute paths, `..`, backslashes, NUL and control characters, and names over [`MAX_PATH_SEGMENT_BYTES`]: a
/// path can never leave its owner's storage, and what the API accepts the filesystem can hold.
pub fn artifact_path(path: &str) -> Result<String> {
    let bad = |reason: &str| Error::InvalidPath {
        path: truncate(path, 200),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("the path is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad(&format!("longer than {MAX_PATH_BYTES} bytes")));
    }
    if path.starts_with('/') || path.starts_with('\\') || path.get(1..2) == Some(":") {
        return Err(bad(
            "absolute paths are not allowed; give a path relative to the run's artifacts",
        ));
    }
    if path.contains('\\') {
        return Err(bad("use '/' to separate folders, not '\\'"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("control characters are not allowed"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(bad("'..' is not allowed")),
            p if p.len() > MAX_PATH_SEGMENT_BYTES => {
                return Err(bad(&format!(
                    "'{}' is {} bytes; each folder or file name may be at most {MAX_PATH_SEGMENT_BYTES} bytes",
                    truncate(p, 40),
                    p.len()
                )))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(bad("the path names no file"));
    }
    Ok(parts.join("/"))
}

fn bounded(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        Err(Error::invalid(
            field,
            format!("is {} bytes long, the limit is {max}", value.len()),
        ))
    } else {
        Ok(())
    }
}

fn no_control_chars(field: &str, value: &str) -> Result<()> {
    if value.chars().any(|c| c.is_control()) {
        Err(Error::invalid(
            field,
            format!(
                "'{}' contains control characters",
                truncate(value, 80).escape_debug()
            ),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("metric", "loss").is_ok());
        assert!(name("metric", "train/loss é 損失").is_ok());
        assert_eq!(
            name("metric", "").unwrap_err().to_string(),
            "invalid metric: must not be empty"
        );
        assert!(name("metric", " x").is_err());
        assert!(name("metric", "a\nb")
            .unwrap_err()
            .to_string()
            .contains("control characters"));
        assert!(name("metric", &"x".repeat(501))
            .unwrap_err()
            .to_string()
            .contains("the limit is 500"));
    }

    #[test]
    fn artifact_paths_cannot_escape() {
        assert_eq!(artifact_path("a/./b//c.txt").unwrap(), "a/b/c.txt");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "C:/x",
            "a/\0b",
            "./.",
            &format!("a/{}/b", "x".repeat(256)),
        ] {
            assert!(
                matches!(artifact_path(bad), Err(Error::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn stream_names() {
        assert!(stream_name("stdout").is_ok());
        assert!(stream_name("python.logging-1").is_ok());
        assert!(stream_name("a/b").is_err());
        assert!(stream_name(".hidden").is_err());
    }
}
