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
        let us = s * 1e6;
        (us.is_finite() && us.abs() < 9.0e18).then(|| WallTime(round_half_away(us)))
    }
    /// The UTC calendar date and time of day: `(year, month, day, hour, minute, second, microsecond)`.
    /// Computed here rather than with a date crate: it is the only calendar arithmetic the project needs.
    pub fn utc(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = self.0.div_euclid(1_000_000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400) as u32;
        let us = self.0.rem_euclid(1_000_000) as u32;
        (y, m, d, s / 3600, s / 60 % 60, s % 60, us)
    }
    /// ISO 8601 UTC with microseconds, e.g. `2023-11-14T22:13:20.123456Z` (sorts as text in time order).
    pub fn iso_8601(self) -> String {
        let (y, m, d, h, mi, s, us) = self.utc();
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `x.round() as i64` for |x| < 9e18, without the library call `round` is on baseline x86-64 (every imported
/// TensorBoard event's time comes through here): truncate, then step away from zero if the rest is a half or
/// more. Both steps are exact in that range.
fn round_half_away(x: f64) -> i64 {
    let t = x as i64;
    let rest = x - t as f64;
    if rest >= 0.5 {
        t + 1
    } else if rest <= -0.5 {
        t - 1
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_f64_round() {
        let mut special = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            -4503599627370495.5,
            4503599627370497.0,
            9007199254740993.0,
            8.999999999999999e18,
            -8.999999999999999e18,
            1.7e15 + 0.5,
            1.7e15 - 0.5,
        ];
        // Wall times as TensorBoard writes them (seconds with a fraction), in microseconds.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = 1.7e9 + (x % 1_000_000_000) as f64 / 977.0;
            special.push(secs * 1e6);
            special.push(-secs * 1e3);
        }
        for v in special {
            assert_eq!(round_half_away(v), v.round() as i64, "{v:e}");
        }
    }

    #[test]
    fn iso_8601_is_utc_with_microseconds() {
        assert_eq!(
            WallTime(1_700_000_000_123_456).iso_8601(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(WallTime(-1).iso_8601(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            WallTime(951_782_400_000_000).utc(),
            (2000, 2, 29, 0, 0, 0, 0)
        );
    }

    #[test]
    fn conversions() {
        let t = WallTime::from_seconds(1_700_000_000.123456).unwrap();
        assert_eq!(t.0, 1_700_000_000_123_456);
        assert_eq!(t.millis(), 1_700_000_000_123);
        assert!(WallTime::from_seconds(f64::NAN).is_none());
        assert!(WallTime::now().0 > 1_600_000_000_000_000);
    }
}
