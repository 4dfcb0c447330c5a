//! The writer's per-series memory of what it last wrote, kept across commits and undone with a failed job.

use std::collections::HashMap;
use std::hash::Hash;

/// Values by series id (or another key: a log stream) that the writer keeps between jobs so as not to read
/// them back (a series' open tail block, its newest points event, a stream's newest append event). What a job touched is forgotten if the job rolls back, and everything if
/// the commit fails, so an entry never describes a write that did not happen; a missing entry only costs a
/// read or a new row. Holders check an entry against the row it describes before using it: another process
/// may have written since.
pub struct JobCache<V, K = i64> {
    map: HashMap<K, (V, usize)>,
    touched: Vec<K>,
    capacity: usize,
    /// The most the entries may weigh together, by `weigh` (bytes, for the tail cache).
    budget: usize,
    weight: usize,
    weigh: fn(&V) -> usize,
}

impl<V, K: Eq + Hash + Clone> JobCache<V, K> {
    /// A cache emptied whenever it would hold more than `capacity` entries (a cheap bound on its memory).
    pub fn new(capacity: usize) -> JobCache<V, K> {
        Self::with_budget(capacity, usize::MAX, |_| 0)
    }

    /// A cache emptied whenever it would hold more than `capacity` entries or weigh more than `budget`; an
    /// entry heavier than the whole budget is not kept at all.
    pub fn with_budget(capacity: usize, budget: usize, weigh: fn(&V) -> usize) -> JobCache<V, K> {
        JobCache {
            map: HashMap::new(),
            touched: Vec::new(),
            capacity,
            budget,
            weight: 0,
            weigh,
        }
    }

    pub fn begin_job(&mut self) {
        self.touched.clear();
    }

    /// Drops what the job being rolled back touched.
    pub fn forget_job(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            self.remove(&id);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.touched.clear();
        self.weight = 0;
    }

    /// Takes the entry of `key` out; the caller puts back what it then writes.
    pub fn take(&mut self, key: &K) -> Option<V> {
        self.touched.push(key.clone());
        self.remove(key)
    }

    pub fn put(&mut self, key: K, value: V) {
        self.touched.push(key.clone());
        self.remove(&key);
        let w = (self.weigh)(&value);
        if w > self.budget {
            return;
        }
        if self.map.len() >= self.capacity || self.weight + w > self.budget {
            self.map.clear();
            self.weight = 0;
        }
        self.weight += w;
        self.map.insert(key, (value, w));
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let (value, w) = self.map.remove(key)?;
        self.weight -= w;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::JobCache;

    #[test]
    fn a_rolled_back_job_forgets_only_what_it_touched() {
        let mut c = JobCache::new(8);
        c.begin_job();
        c.put(1, "a");
        c.begin_job();
        c.put(2, "b");
        assert_eq!(c.take(&1), Some("a"));
        c.put(1, "a2");
        c.forget_job();
        assert_eq!(c.take(&1), None, "rewritten by the failed job");
        assert_eq!(c.take(&2), None, "written by the failed job");
        c.begin_job();
        c.put(3, "c");
        c.begin_job();
        assert_eq!(c.take(&3), Some("c"), "an earlier job's entry survives");
    }

    #[test]
    fn it_empties_itself_at_capacity() {
        let mut c = JobCache::new(2);
        c.put(1, 1);
        c.put(2, 2);
        c.put(3, 3);
        assert_eq!((c.take(&1), c.take(&2), c.take(&3)), (None, None, Some(3)));
    }

    #[test]
    fn it_empties_itself_past_its_budget_and_keeps_no_entry_heavier_than_it() {
        let mut c = JobCache::with_budget(100, 10, |v: &usize| *v);
        c.put(1, 4);
        c.put(2, 4);
        c.put(2, 5); // replacing an entry counts only the new weight
        assert_eq!(c.take(&1), Some(4));
        c.put(1, 4);
        c.put(3, 3); // 4 + 5 + 3 > 10: emptied first
        assert_eq!((c.take(&1), c.take(&2), c.take(&3)), (None, None, Some(3)));
        c.put(4, 11);
        assert_eq!(c.take(&4), None, "heavier than the whole budget");
    }
}
