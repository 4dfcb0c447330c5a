//! MLflow's identity of a metric point, its step, time and value together: the points of a write that its
//! series already holds, or that come earlier in the same write, are left out.

use super::blocks::{self, span, Scalars, ScalarsExt};
use flightlog_model::Result;
use rusqlite::Connection;
use std::collections::HashSet;

/// A point as MLflow's metrics table keys it: NaN equals NaN (the table stores a NaN flag, not the payload),
/// and 0.0 equals -0.0 (SQL compares numbers by value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Identity {
    step: i64,
    time: i64,
    value_bits: u64,
}

impl Identity {
    fn of(pts: &Scalars, i: usize) -> Identity {
        let v = pts.values[i].0;
        let value_bits = match v {
            _ if v.is_nan() => f64::NAN.to_bits(),
            0.0 => 0,
            _ => v.to_bits(),
        };
        Identity {
            step: pts.steps[i],
            time: pts.times[i].0,
            value_bits,
        }
    }
}

/// `pts` without the points that series `series_id` (holding `count` points) already holds or that repeat an
/// earlier point of `pts`. In the usual case nothing repeats and no block is read: a training loop's points move
/// forward in step or in time, past the spans of every stored block, and the index of spans says so.
pub fn without_repeats(
    conn: &Connection,
    series_id: i64,
    count: u64,
    pts: Scalars,
) -> Result<Scalars> {
    let mut seen = match count {
        0 => HashSet::new(),
        _ => stored_in_spans_of(conn, series_id, &pts)?,
    };
    if seen.is_empty() && moves_forward(&pts) {
        return Ok(pts);
    }
    let mut kept = Scalars::with_capacity(pts.len());
    for i in 0..pts.len() {
        if seen.insert(Identity::of(&pts, i)) {
            kept.push(pts.steps[i], pts.times[i], pts.values[i]);
        }
    }
    Ok(kept)
}

/// Whether each point comes after the one before it by (step, time), so that none can repeat another.
fn moves_forward(pts: &Scalars) -> bool {
    let order = |i: usize| (pts.steps[i], pts.times[i].0);
    (1..pts.len()).all(|i| order(i - 1) < order(i))
}

/// The identities of the stored points whose step and time both fall within the spans of `pts`: the only
/// ones a point of `pts` can repeat.
fn stored_in_spans_of(
    conn: &Connection,
    series_id: i64,
    pts: &Scalars,
) -> Result<HashSet<Identity>> {
    let (Some(steps), Some(times)) = (
        span(pts.steps.iter().copied()),
        span(pts.times.iter().map(|t| t.0)),
    ) else {
        return Ok(HashSet::new());
    };
    let mut stored = Scalars::default();
    blocks::scalars_cut_by(conn, series_id, &steps, &times, &mut stored)?;
    Ok((0..stored.len())
        .filter(|&i| steps.contains(&stored.steps[i]) && times.contains(&stored.times[i].0))
        .map(|i| Identity::of(&stored, i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{WallTime, F64};

    fn pts(points: &[(i64, i64, f64)]) -> Scalars {
        let mut s = Scalars::default();
        for &(step, time, value) in points {
            s.push(step, WallTime(time), F64(value));
        }
        s
    }

    #[test]
    fn identity_follows_mlflows_key() {
        let id = |v: f64| Identity::of(&pts(&[(1, 2, v)]), 0);
        assert_eq!(id(f64::NAN), id(-f64::NAN), "every NaN is one value");
        assert_eq!(id(0.0), id(-0.0), "zero has one sign");
        assert_ne!(id(1.0), id(1.0 + f64::EPSILON));
        let base = Identity::of(&pts(&[(1, 2, 0.5)]), 0);
        assert_ne!(
            base,
            Identity::of(&pts(&[(2, 2, 0.5)]), 0),
            "the step counts"
        );
        assert_ne!(
            base,
            Identity::of(&pts(&[(1, 3, 0.5)]), 0),
            "the time counts"
        );
    }

    #[test]
    fn moving_forward_is_by_step_then_time() {
        assert!(moves_forward(&pts(&[
            (0, 5, 1.0),
            (1, 1, 1.0),
            (1, 2, 1.0)
        ])));
        assert!(
            moves_forward(&pts(&[(0, 1, 1.0), (0, 2, 1.0)])),
            "step 0 logged over time"
        );
        assert!(moves_forward(&pts(&[])) && moves_forward(&pts(&[(3, 3, 3.0)])));
        assert!(
            !moves_forward(&pts(&[(0, 1, 1.0), (0, 1, 2.0)])),
            "same step and time"
        );
        assert!(
            !moves_forward(&pts(&[(2, 1, 1.0), (1, 2, 1.0)])),
            "a step back"
        );
    }
}
