//! A run's accumulator: what log calls hand the client for one run, in columns, until the sender seals it into
//! batches. The crash log's recovery feeds the same accumulator the same calls, so it seals the same batches.

use flightlog_model::*;
use std::collections::HashMap;

/// Log text of one stream queued back to back is sent as one append up to this size: under heavy output the
/// backlog goes in a few large appends (each a durable commit on the server) rather than many small ones.
/// Half the server's limit for one append (and of the memory one request body takes there).
const MAX_LOG_APPEND_TEXT: usize = validate::MAX_LOG_APPEND_BYTES / 2;

#[derive(Default)]
pub(crate) struct ScalarCol {
    pub name: String,
    /// Sent with the next points (a series' description is kept from its first write).
    pub description: Option<String>,
    steps: Vec<Option<i64>>,
    times: Vec<WallTime>,
    values: Vec<F64>,
    /// The crash log epoch this column was last named in (see [`crate::crashlog`]); 0: not yet.
    pub logged: u64,
}

#[derive(Default)]
pub(crate) struct RunAcc {
    index: HashMap<String, usize>,
    pub scalars: Vec<ScalarCol>,
    metrics: Vec<MetricWrite>,
    logs: Vec<LogAppend>,
    points: usize,
    /// The run's number in the crash log, and the epoch it was given in (0: not yet).
    pub log_ref: (u64, u32),
}

impl RunAcc {
    pub fn is_empty(&self) -> bool {
        self.points == 0 && self.metrics.is_empty() && self.logs.is_empty()
    }

    /// The column of scalar series `name`, made (its name validated) on first use.
    #[inline]
    pub fn column(&mut self, name: &str) -> Result<usize> {
        if let Some(&i) = self.index.get(name) {
            return Ok(i);
        }
        validate::name("metric", name)?;
        self.scalars.push(ScalarCol {
            name: name.to_string(),
            ..Default::default()
        });
        self.index.insert(name.to_string(), self.scalars.len() - 1);
        Ok(self.scalars.len() - 1)
    }

    /// Column `idx` named `name`, as the live client numbered it: columns are sealed in that order, so a
    /// recovered accumulator splits its batches where the live one did.
    pub fn column_at(&mut self, idx: usize, name: &str) {
        while self.scalars.len() <= idx {
            self.scalars.push(ScalarCol::default());
        }
        self.scalars[idx].name = name.to_string();
        self.index.insert(name.to_string(), idx);
    }

    #[inline]
    pub fn push_scalar(&mut self, col: usize, step: Option<i64>, time: WallTime, value: F64) {
        let col = &mut self.scalars[col];
        col.steps.push(step);
        col.times.push(time);
        col.values.push(value);
        self.points += 1;
    }

    /// Queues a list, row, table... write; returns its points.
    pub fn push_metric(&mut self, write: MetricWrite) -> usize {
        let n = write.point_count();
        self.metrics.push(write);
        self.points += n;
        n
    }

    /// Queues output text, appended to the previous chunk of the same stream while that stays small enough.
    pub fn push_text(&mut self, stream: &str, text: &str) {
        match self.logs.last_mut() {
            Some(last)
                if last.stream == stream && last.data.len() + text.len() <= MAX_LOG_APPEND_TEXT =>
            {
                last.data.push_str(text)
            }
            _ => self.logs.push(LogAppend {
                stream: stream.to_string(),
                data: text.to_string(),
            }),
        }
    }

    /// Takes the pending data as batches of at most `max_points` points (scalar columns are split).
    pub fn seal(&mut self, max_points: usize) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut cur = Batch::default();
        let mut cur_points = 0usize;
        let max_points = max_points.max(1);
        for col in &mut self.scalars {
            if col.values.is_empty() {
                continue;
            }
            let mut steps = std::mem::take(&mut col.steps);
            let mut times = std::mem::take(&mut col.times);
            let mut values = std::mem::take(&mut col.values);
            while !values.is_empty() {
                let room = max_points - cur_points;
                let take = room.min(values.len());
                let (s, t, v) = if take == values.len() {
                    (
                        std::mem::take(&mut steps),
                        std::mem::take(&mut times),
                        std::mem::take(&mut values),
                    )
                } else {
                    let rest_s = steps.split_off(take);
                    let rest_t = times.split_off(take);
                    let rest_v = values.split_off(take);
                    (
                        std::mem::replace(&mut steps, rest_s),
                        std::mem::replace(&mut times, rest_t),
                        std::mem::replace(&mut values, rest_v),
                    )
                };
                let steps = if s.iter().all(Option::is_none) {
                    None
                } else {
                    Some(s)
                };
                cur.scalars.push(ScalarWrite {
                    name: col.name.clone(),
                    description: col.description.take(),
                    steps,
                    times: Some(t),
                    values: v,
                });
                cur_points += take;
                if cur_points >= max_points {
                    out.push(std::mem::take(&mut cur));
                    cur_points = 0;
                }
            }
        }
        for m in self.metrics.drain(..) {
            let n = m.point_count().max(1);
            if cur_points > 0 && cur_points + n > max_points {
                out.push(std::mem::take(&mut cur));
                cur_points = 0;
            }
            cur.metrics.push(m);
            cur_points += n;
        }
        cur.logs = std::mem::take(&mut self.logs);
        if !cur.scalars.is_empty() || !cur.metrics.is_empty() || !cur.logs.is_empty() {
            out.push(cur);
        }
        self.points = 0;
        for b in &mut out {
            b.batch_id = Some(uuid::Uuid::new_v4().simple().to_string());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_splits_columns_into_bounded_batches_in_order() {
        let mut acc = RunAcc::default();
        for (name, n) in [("a", 5), ("b", 3)] {
            let col = acc.column(name).unwrap();
            for i in 0..n {
                let step = if name == "a" { Some(i) } else { None };
                acc.push_scalar(col, step, WallTime(i), F64(i as f64));
            }
        }
        acc.push_metric(MetricWrite::List {
            name: "l".into(),
            description: None,
            values: vec![F64(1.0)],
            step: None,
            time: None,
        });
        acc.push_text("stdout", "x");
        let batches = acc.seal(3);
        assert!(batches.iter().all(|b| b.point_count() <= 3), "{batches:?}");
        assert_eq!(batches.iter().map(Batch::point_count).sum::<usize>(), 9);
        let a: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.scalars.iter().filter(|s| s.name == "a"))
            .flat_map(|s| s.steps.clone().unwrap().into_iter().map(Option::unwrap))
            .collect();
        assert_eq!(a, vec![0, 1, 2, 3, 4]);
        assert!(batches
            .iter()
            .flat_map(|b| &b.scalars)
            .filter(|s| s.name == "b")
            .all(|s| s.steps.is_none()));
        let mut ids: Vec<_> = batches
            .iter()
            .map(|b| b.batch_id.clone().unwrap())
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), batches.len());
        assert!(acc.is_empty());
        assert!(acc.seal(3).is_empty());
        assert_eq!(acc.index.len(), 2, "names stay known (validated once)");
    }
}
