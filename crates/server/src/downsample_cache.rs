//! A bounded LRU of downsampled scalar reads, so that reopening a run's charts (another viewer, a reload, back and
//! forward) answers from a few kilobytes instead of decoding and scanning each million-point series again.

use flightlog_model::{ReadRange, RunId, ScalarSeries};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of cached points kept at most (24 bytes a point: ~1.4M points, ~1,000 charts of 600 px).
const MAX_BYTES: usize = 32 << 20;

/// What a downsampled read depends on. `count` is the series' point count at the read, so any append makes
/// older entries unreachable (they age out).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    run: RunId,
    name: String,
    count: u64,
    range: (u64, Option<u64>, Option<i64>, Option<i64>),
    buckets: u32,
}

impl Key {
    pub fn new(run: &RunId, name: &str, count: u64, range: &ReadRange, buckets: u32) -> Self {
        Key {
            run: run.clone(),
            name: name.to_string(),
            count,
            range: (
                range.start_index,
                range.limit,
                range.min_step,
                range.max_step,
            ),
            buckets,
        }
    }
}

#[derive(Default)]
pub struct DownsampleCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, (Arc<ScalarSeries>, u64)>,
    bytes: usize,
    clock: u64,
}

fn size(s: &ScalarSeries) -> usize {
    s.len() * 24 + 128
}

impl DownsampleCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent in a way that matters for a cache.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Arc<ScalarSeries>> {
        let mut s = self.state();
        s.clock += 1;
        let now = s.clock;
        let entry = s.entries.get_mut(key)?;
        entry.1 = now;
        Some(entry.0.clone())
    }

    /// Stores a result, evicting the least recently used entries beyond the byte budget.
    pub fn put(&self, key: Key, series: Arc<ScalarSeries>) {
        let add = size(&series);
        if add > MAX_BYTES / 4 {
            return;
        }
        let mut s = self.state();
        s.clock += 1;
        let now = s.clock;
        if let Some((old, _)) = s.entries.insert(key, (series, now)) {
            s.bytes -= size(&old);
        }
        s.bytes += add;
        while s.bytes > MAX_BYTES {
            let Some(oldest) = s
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = s.entries.remove(&oldest) {
                s.bytes -= size(&gone);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flightlog_model::{WallTime, F64};

    fn series(n: usize) -> Arc<ScalarSeries> {
        Arc::new(ScalarSeries {
            steps: (0..n as i64).collect(),
            times: (0..n as i64).map(WallTime).collect(),
            values: (0..n).map(|i| F64(i as f64)).collect(),
        })
    }

    #[test]
    fn hits_by_count_and_range_and_evicts_oldest() {
        let run: RunId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let c = DownsampleCache::default();
        let range = ReadRange::default();
        let k = Key::new(&run, "loss", 10, &range, 600);
        c.put(k.clone(), series(3));
        assert_eq!(c.get(&k).map(|s| s.len()), Some(3));
        assert!(
            c.get(&Key::new(&run, "loss", 11, &range, 600)).is_none(),
            "an append changes the key"
        );
        let zoom = ReadRange {
            min_step: Some(5),
            ..Default::default()
        };
        assert!(c.get(&Key::new(&run, "loss", 10, &zoom, 600)).is_none());
        // Fill past the budget: the first entry (least recently used) goes.
        let big = MAX_BYTES / 8 / 24;
        for i in 0..10 {
            c.put(
                Key::new(&run, &format!("m{i}"), 1, &range, 600),
                series(big),
            );
        }
        assert!(c.get(&k).is_none(), "evicted");
        assert!(c.state().bytes <= MAX_BYTES);
        assert!(c.get(&Key::new(&run, "m9", 1, &range, 600)).is_some());
    }
}
