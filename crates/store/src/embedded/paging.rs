//! Opaque page tokens: the sort key of the last item of a page, hex-encoded, so the next page starts right
//! after it even if rows were added meanwhile.

use flightlog_model::{Error, Result};

/// Items per page when the query names no limit.
pub const DEFAULT_LIMIT: u32 = 1000;
/// Most items per page.
pub const MAX_LIMIT: u32 = 50_000;

/// The page size for a query's `limit`.
pub fn limit(requested: Option<u32>) -> usize {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize
}

/// A token for the position after the item with sort key (`time`, `id`).
pub fn encode(time: i64, id: &str) -> String {
    format!("{time}:{id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The (`time`, `id`) position a token names; `InvalidArgument` for anything this module did not produce.
pub fn decode(token: &str) -> Result<(i64, String)> {
    let bad = || Error::invalid("page_token", "is not a page token from a previous listing");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (time, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((time.parse().map_err(|_| bad())?, id.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = super::encode(-5, "abc");
        assert_eq!(super::decode(&t).unwrap(), (-5, "abc".to_string()));
        for bad in ["zz", "abc", "3132", ""] {
            assert!(super::decode(bad).is_err(), "{bad}");
        }
    }
}
