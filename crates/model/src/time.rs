//! Wall time in microseconds since the Unix epoch: fine enough for TensorBoard's float seconds to round-trip,
//! and an integer, so it can never be NaN.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01 UTC.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct WallTime(pub i64);

impl WallTime {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        WallTime(d.as_micros() as i64)
    }
    pub fn from_millis(ms: i64) -> Self {
        WallTime(ms.saturating_mul(1000))
    }
    pub fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// Float seconds, as TensorBoard stores wall time.
    pub fn seconds(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// From float seconds; `None` for NaN or out-of-range values.
    pub fn from_seconds(s: f64) -> Option<Self> {
        let us = (s * 1e6).round();
        (us.is_finite() && us.abs() < 9.0e18).then_some(WallTime(us as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let t = WallTime::from_seconds(1_700_000_000.123456).unwrap();
        assert_eq!(t.0, 1_700_000_000_123_456);
        assert_eq!(t.millis(), 1_700_000_000_123);
        assert!(WallTime::from_seconds(f64::NAN).is_none());
        assert!(WallTime::now().0 > 1_600_000_000_000_000);
    }
}
