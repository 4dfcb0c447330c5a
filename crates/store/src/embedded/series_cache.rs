//! A bounded LRU of fully decoded scalar series for repeated reads (charts re-downsample the same series on
//! every zoom). Entries are keyed by series id *and* point count, so any append makes an entry unreachable.

use super::blocks::{Scalars, ScalarsExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Decoded points kept at most (about 2.8M points).
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
pub struct SeriesCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<i64, Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    count: u64,
    points: Arc<Scalars>,
    used: u64,
}

impl SeriesCache {
    /// The cached points of series `id` if they are exactly its current `count` points.
    pub fn get(&self, id: i64, count: u64) -> Option<Arc<Scalars>> {
        let mut s = self.state.lock();
        s.clock += 1;
        let now = s.clock;
        let e = s.entries.get_mut(&id).filter(|e| e.count == count)?;
        e.used = now;
        Some(e.points.clone())
    }

    /// Caches all `count` points of series `id`, evicting the least recently used entries to stay bounded.
    pub fn put(&self, id: i64, count: u64, points: Arc<Scalars>) {
        let size = points.heap_bytes();
        if size > MAX_BYTES / 2 {
            return;
        }
        let mut s = self.state.lock();
        if let Some(old) = s.entries.remove(&id) {
            s.bytes -= old.points.heap_bytes();
        }
        while s.bytes + size > MAX_BYTES {
            let Some((&victim, _)) = s.entries.iter().min_by_key(|(_, e)| e.used) else {
                break;
            };
            if let Some(old) = s.entries.remove(&victim) {
                s.bytes -= old.points.heap_bytes();
            }
        }
        s.clock += 1;
        let used = s.clock;
        s.bytes += size;
        s.entries.insert(
            id,
            Entry {
                count,
                points,
                used,
            },
        );
    }
}
