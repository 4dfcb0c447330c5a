//! Event-file summaries as flightlog metric writes: the one mapping behind `flightlog import tensorboard` and
//! the server's ingest of event files uploaded under a run's `logs/`.

use crate::proto::event::What;
use crate::{Datum, Decoded, Event, RecordError, ValueDecoder};
use flightlog_model::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A batch is sent when it holds this many points...
pub const BATCH_POINTS: usize = 100_000;
/// ...or this many bytes of text.
pub const BATCH_TEXT_BYTES: usize = 16 << 20;

/// Where ingested points go: the HTTP client (CLI import) or the store (server ingest).
pub trait IngestSink {
    /// Stores a batch; its `batch_id` makes a repeated batch a no-op.
    fn write_batch(&mut self, run: &RunId, batch: Batch) -> Result<()>;
    fn write_image(&mut self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()>;
    /// Adds params to the run (names it does not hold yet: [`StoredRun::params`] screens the rest).
    fn write_params(&mut self, run: &RunId, params: BTreeMap<String, String>) -> Result<()>;
}

/// What the run holds already, as far as ingest needs to know: each tag's kind (a tag keeps the kind it was
/// first stored as) and the params (a param keeps its first value). Read from the store before a file is
/// ingested, and kept up to date by the ingest.
#[derive(Clone, Debug, Default)]
pub struct StoredRun {
    pub kinds: HashMap<String, MetricKind>,
    pub params: BTreeMap<String, String>,
}

impl StoredRun {
    /// From the run's series and params as the store lists them.
    pub fn new(series: Vec<SeriesInfo>, params: BTreeMap<String, String>) -> Self {
        StoredRun {
            kinds: series.into_iter().map(|m| (m.name, m.kind)).collect(),
            params,
        }
    }
}

/// What was ingested.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestCounts {
    pub scalar_points: u64,
    pub other_points: u64,
    pub images: u64,
    /// Params added (hyperparameters of the hparams plugin).
    pub params: u64,
    /// Values skipped (audio, unknown plugins, a tag logged as two kinds), by reason.
    pub skipped: BTreeMap<String, u64>,
}

/// A metric name that passes validation: control characters replaced, trimmed (as names of earlier imports
/// were), never empty, cut to [`validate::MAX_NAME_CHARS`] characters.
pub fn clean_name(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let s: String = s.trim().chars().take(validate::MAX_NAME_CHARS).collect();
    if s.trim().is_empty() {
        "_".to_string()
    } else {
        s.trim().to_string()
    }
}

/// Whether [`clean_name`] would leave `s` as it is (the common case, checked without allocating).
fn is_clean(s: &str) -> bool {
    !s.is_empty()
        && validate::fits_chars(s, validate::MAX_NAME_CHARS)
        && s.trim() == s
        && !s.chars().any(char::is_control)
}

/// A tag as a metric name: borrowed when it is clean already (the common case), else [`clean_name`]d.
fn metric_name(tag: &str) -> std::borrow::Cow<'_, str> {
    if is_clean(tag) {
        std::borrow::Cow::Borrowed(tag)
    } else {
        std::borrow::Cow::Owned(clean_name(tag))
    }
}

/// The media type of encoded image bytes, by their signature.
pub fn media_type(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// Turns one file's events into batches whose ids come from the file's key and the records' offsets (so a
/// batch sent again is stored once) and images.
pub struct FileIngest<'a, S: IngestSink + ?Sized> {
    sink: &'a mut S,
    run: &'a RunId,
    file_key: String,
    /// What the run holds so far.
    stored: &'a mut StoredRun,
    counts: &'a mut IngestCounts,
    decoder: &'a mut ValueDecoder,
    batch: Pending,
    /// Points that make a batch full ([`BATCH_POINTS`] unless set by [`Self::batch_points`]).
    max_points: usize,
    /// The offset of the record whose images were written last, and how many it had so far: with the file's
    /// key they make each image's batch id.
    record_images: (u64, u32),
}

/// Steps, times and values of one text series in a batch.
type TextColumns = (Vec<Option<i64>>, Vec<WallTime>, Vec<String>);

#[derive(Default)]
struct Pending {
    first: Option<u64>,
    last: u64,
    points: usize,
    text_bytes: usize,
    /// Scalar series in order of first appearance; `scalar_index` finds one by name, `hot` is the one the
    /// last scalar went to (a file usually holds long runs of the same tag).
    scalars: Vec<ScalarWrite>,
    scalar_index: HashMap<String, usize>,
    hot: usize,
    texts: BTreeMap<String, TextColumns>,
    others: Vec<MetricWrite>,
}

impl Pending {
    /// Counts a point of the record at `offset`.
    fn note(&mut self, offset: u64) {
        self.first.get_or_insert(offset);
        self.last = offset;
        self.points += 1;
    }

    /// Appends to the series the last scalar went to if it is `tag`'s (no kind check or lookup needed: the
    /// tag was claimed as a scalar when its series was made). `false` for another tag.
    fn push_to_hot(&mut self, tag: &str, step: i64, time: WallTime, v: f64) -> bool {
        let Some(w) = self.scalars.get_mut(self.hot).filter(|w| w.name == tag) else {
            return false;
        };
        w.steps.get_or_insert_with(Vec::new).push(Some(step));
        w.times.get_or_insert_with(Vec::new).push(time);
        w.values.push(F64(v));
        true
    }

    /// A scalar series for `tag`. The batch's first series gets room for every point the batch can still take
    /// (commonly a file logs one tag, or a few in turn): its columns then never grow by copying, which with
    /// their page faults cost more than filling them. Later series grow as they go.
    fn new_series(&mut self, tag: &str, room: usize) -> usize {
        let room = if self.scalars.is_empty() { room } else { 0 };
        self.scalars.push(ScalarWrite {
            name: tag.to_string(),
            steps: Some(Vec::with_capacity(room)),
            times: Some(Vec::with_capacity(room)),
            values: Vec::with_capacity(room),
            ..Default::default()
        });
        self.scalar_index
            .insert(tag.to_string(), self.scalars.len() - 1);
        self.scalars.len() - 1
    }
}

impl<'a, S: IngestSink + ?Sized> FileIngest<'a, S> {
    /// `file` names the event file within its run and `identity` ([`crate::reader::read_identity`]) tells
    /// it from another file of that name: batch ids derive from both, so a batch sent again is stored once
    /// and a replaced file's batches are not taken for its predecessor's.
    pub fn new(
        sink: &'a mut S,
        run: &'a RunId,
        (file, identity): (&str, Option<u64>),
        stored: &'a mut StoredRun,
        counts: &'a mut IngestCounts,
        decoder: &'a mut ValueDecoder,
    ) -> Self {
        let key = match identity {
            Some(id) => fnv1a128(format!("{file}\0{id:016x}").as_bytes()),
            None => fnv1a128(file.as_bytes()),
        };
        FileIngest {
            sink,
            run,
            file_key: format!("{:016x}", key as u64),
            stored,
            counts,
            decoder,
            batch: Pending::default(),
            max_points: BATCH_POINTS,
            record_images: (0, 0),
        }
    }

    /// Sends a batch every `n` points: smaller batches let a sender that talks to a server decode the next
    /// one while the server stores the last.
    pub fn batch_points(mut self, n: usize) -> Self {
        self.max_points = n.max(1);
        self
    }

    /// Reads one event; only events past the watermark (`new`) are stored, but every event is decoded so that
    /// a tag's plugin (sent only with its first value) is known.
    pub fn event(&mut self, offset: u64, e: &Event, new: bool) -> Result<()> {
        let Some(What::Summary(s)) = &e.what else {
            return Ok(());
        };
        let time = WallTime::from_seconds(e.wall_time).unwrap_or_default();
        for v in &s.value {
            let datum = self.decoder.decode(v);
            if new {
                self.datum(offset, &metric_name(&v.tag), e.step, time, datum)?;
            }
        }
        self.flush_if_full()
    }

    /// Reads one record as [`crate::visit_decoded`] gives it; see [`Self::event`].
    pub fn decoded(&mut self, offset: u64, d: &Decoded<'_, '_>, new: bool) -> Result<()> {
        match d {
            Decoded::Event(e) => self.event(offset, e, new),
            // Without metadata there is no plugin to learn from records before the watermark.
            Decoded::Scalars(_) if !new => Ok(()),
            Decoded::Scalars(s) => {
                let time = WallTime::from_seconds(s.wall_time).unwrap_or_default();
                for &(tag, v) in &s.values {
                    // The last scalar's tag (the common case) was a clean name already: no check needed.
                    if self.batch.push_to_hot(tag, s.step, time, v as f64) {
                        self.batch.note(offset);
                        self.counts.scalar_points += 1;
                        continue;
                    }
                    let name = metric_name(tag);
                    self.datum(offset, &name, s.step, time, Datum::Scalar(v as f64))?;
                }
                self.flush_if_full()
            }
        }
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.batch.points >= self.max_points || self.batch.text_bytes >= BATCH_TEXT_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether `tag` may hold `kind`.
    fn claim(&mut self, tag: &str, kind: MetricKind) -> bool {
        let kinds = &mut self.stored.kinds;
        let k = match kinds.get(tag) {
            Some(k) => *k,
            None => *kinds.entry(tag.to_string()).or_insert(kind),
        };
        if k != kind {
            self.skip(format!("tag '{tag}' already holds {k} values, not {kind}"));
        }
        k == kind
    }

    /// Counts a value left out, by why.
    fn skip(&mut self, why: String) {
        *self.counts.skipped.entry(why).or_default() += 1;
    }

    fn datum(&mut self, offset: u64, tag: &str, step: i64, time: WallTime, d: Datum) -> Result<()> {
        if let Datum::Scalar(v) = d {
            if self.batch.push_to_hot(tag, step, time, v) {
                self.batch.note(offset);
                self.counts.scalar_points += 1;
                return Ok(());
            }
        }
        let kind = match &d {
            Datum::Scalar(_) => MetricKind::Scalar,
            Datum::Text(_) => MetricKind::Text,
            Datum::Images(_) => MetricKind::Image,
            Datum::Histogram { .. } => MetricKind::Histogram,
            Datum::Params(_) | Datum::Unsupported(_) => return self.not_a_metric(d),
        };
        if let Err(e) = storable(tag, &d) {
            self.skip(refusal(e));
            return Ok(());
        }
        if !self.claim(tag, kind) {
            return Ok(());
        }
        let p = &mut self.batch;
        p.note(offset);
        match d {
            Datum::Scalar(v) => {
                p.hot = match p.scalar_index.get(tag) {
                    Some(&i) => i,
                    None => p.new_series(tag, self.max_points.saturating_sub(p.points - 1)),
                };
                p.push_to_hot(tag, step, time, v);
                self.counts.scalar_points += 1;
            }
            Datum::Text(s) => {
                p.text_bytes += s.len();
                let t = p.texts.entry(tag.to_string()).or_default();
                t.0.push(Some(step));
                t.1.push(time);
                t.2.push(s);
                self.counts.other_points += 1;
            }
            Datum::Histogram {
                limits,
                counts,
                lower,
            } => {
                p.others.push(MetricWrite::Histogram {
                    name: tag.to_string(),
                    description: None,
                    limits: limits.into_iter().map(F64).collect(),
                    counts: counts.into_iter().map(F64).collect(),
                    lower: lower.map(F64),
                    step: Some(step),
                    time: Some(time),
                });
                self.counts.other_points += 1;
            }
            Datum::Images(images) => self.images(offset, tag, step, time, images)?,
            Datum::Params(_) | Datum::Unsupported(_) => {}
        }
        Ok(())
    }

    /// A datum that is no metric point: hyperparameters, or a value of a form that is skipped.
    fn not_a_metric(&mut self, d: Datum) -> Result<()> {
        match d {
            Datum::Params(params) => self.params(params),
            Datum::Unsupported(why) => {
                self.skip(why.to_string());
                Ok(())
            }
            Datum::Scalar(_) | Datum::Text(_) | Datum::Images(_) | Datum::Histogram { .. } => {
                Ok(())
            }
        }
    }

    /// Adds a session's hyperparameters to the run's params. One the run holds with this value already is
    /// left alone (a re-import), and one the store would refuse (an invalid name or value, or another value
    /// than the run holds: a param keeps its first) is skipped alone.
    fn params(&mut self, params: BTreeMap<String, String>) -> Result<()> {
        let mut new = BTreeMap::new();
        for (name, value) in params {
            let refusal = match self.stored.params.get(&name) {
                Some(held) if *held == value => continue,
                Some(held) => Err(Error::invalid(
                    "param",
                    format!("'{name}' holds '{held}' already, not '{value}'"),
                )),
                None => validate::name("param", &name).and(validate::value("param", &value)),
            };
            match refusal {
                Ok(()) => {
                    new.insert(name, value);
                }
                Err(e) => self.skip(format!("hparams: {e}")),
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        self.counts.params += new.len() as u64;
        self.stored.params.extend(new.clone());
        self.sink.write_params(self.run, new)
    }

    /// Writes the images of the record at `offset`, each with a batch id from the file, the record and its
    /// place in the record, so an image sent again (a retry, a re-import) is stored once.
    fn images(
        &mut self,
        offset: u64,
        tag: &str,
        step: i64,
        time: WallTime,
        images: Vec<Vec<u8>>,
    ) -> Result<()> {
        for bytes in images {
            let Some(media_type) = media_type(&bytes) else {
                self.skip("image that is not PNG, JPEG or GIF".into());
                continue;
            };
            if let Err(e) = validate::image_size(bytes.len()) {
                self.skip(refusal(e));
                continue;
            }
            let nth = match self.record_images {
                (at, n) if at == offset => n,
                _ => 0,
            };
            self.record_images = (offset, nth + 1);
            let meta = ImageWrite {
                name: tag.to_string(),
                description: None,
                step: Some(step),
                time: Some(time),
                media_type: media_type.to_string(),
                batch_id: Some(format!("tb-{}-img-{offset}-{nth}", self.file_key)),
            };
            self.sink.write_image(self.run, &meta, &bytes)?;
            self.counts.images += 1;
        }
        Ok(())
    }

    /// Sends the pending batch (if any).
    pub fn flush(&mut self) -> Result<()> {
        let p = std::mem::take(&mut self.batch);
        let Some(first) = p.first else {
            return Ok(());
        };
        let mut batch = Batch {
            batch_id: Some(format!("tb-{}-{first}-{}", self.file_key, p.last)),
            scalars: p.scalars,
            metrics: p.others,
            ..Default::default()
        };
        for (name, (steps, times, values)) in p.texts {
            batch.metrics.push(MetricWrite::Text {
                name,
                description: None,
                steps: Some(steps),
                times: Some(times),
                values,
            });
        }
        if batch.scalars.is_empty() && batch.metrics.is_empty() {
            return Ok(());
        }
        self.sink.write_batch(self.run, batch)
    }
}

/// Whether the store takes `d` as a point of `tag`: checked value by value, because the store refuses a whole
/// batch for one value it does not take, and a batch holds up to [`BATCH_POINTS`] points of the file.
fn storable(tag: &str, d: &Datum) -> Result<()> {
    match d {
        Datum::Text(s) => validate::text_point(tag, s),
        Datum::Histogram {
            limits,
            counts,
            lower,
        } => validate::histogram(tag, limits.len(), counts.len(), lower.map(F64)),
        Datum::Scalar(_) | Datum::Images(_) | Datum::Params(_) | Datum::Unsupported(_) => Ok(()),
    }
}

/// The reason a value the store refuses is skipped: the store's own words, without the value's size (so one
/// reason counts every value refused for the same limit).
fn refusal(e: Error) -> String {
    match e {
        Error::TooLarge { what, limit, .. } => {
            format!("{what} over the store's limit of {limit} bytes")
        }
        e => e.to_string(),
    }
}

/// What [`write_behind`] hands its second thread.
enum Job {
    Batch(RunId, Batch),
    Image(RunId, ImageWrite, Vec<u8>),
    Params(RunId, BTreeMap<String, String>),
}

/// The sink [`write_behind`] gives its caller: every write is queued for the second thread.
struct Behind(std::sync::mpsc::SyncSender<Job>);

impl IngestSink for Behind {
    fn write_batch(&mut self, run: &RunId, batch: Batch) -> Result<()> {
        self.queue(Job::Batch(run.clone(), batch))
    }
    fn write_image(&mut self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        self.queue(Job::Image(run.clone(), meta.clone(), bytes.to_vec()))
    }
    fn write_params(&mut self, run: &RunId, params: BTreeMap<String, String>) -> Result<()> {
        self.queue(Job::Params(run.clone(), params))
    }
}

impl Behind {
    fn queue(&mut self, job: Job) -> Result<()> {
        // The writer only hangs up after an error, which `write_behind` reports instead of this one.
        self.0
            .send(job)
            .map_err(|_| Error::storage("the ingest writer stopped"))
    }
}

/// Runs `f` (which decodes and sends) with a sink whose writes go to `sink` on a second thread, in order:
/// the next batch is decoded while the last one is stored, instead of one waiting for the other. Returns
/// once every write is done; the first failed write is the error (later ones are not attempted).
pub fn write_behind<S: IngestSink + Send, T>(
    sink: &mut S,
    f: impl FnOnce(&mut dyn IngestSink) -> Result<T>,
) -> Result<T> {
    // One batch queued while one is stored: decoding never runs more than a batch ahead.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<()> {
            for job in rx {
                match job {
                    Job::Batch(run, batch) => sink.write_batch(&run, batch)?,
                    Job::Image(run, meta, bytes) => sink.write_image(&run, &meta, &bytes)?,
                    Job::Params(run, params) => sink.write_params(&run, params)?,
                }
            }
            Ok(())
        });
        let out = f(&mut Behind(tx));
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::storage("the ingest writer panicked")));
        written.and(out)
    })
}

/// Ingests an event file read from `src`, which is positioned at file offset `from` (every record from there
/// on is new), a piece at a time ([`crate::reader::read_in_pieces`]) instead of read whole into memory: every
/// complete record's points go to the sink. Returns the offset after the last whole record (a partial last
/// record is left for later) and the damaged records, which were skipped.
pub fn ingest_reader<S: IngestSink + ?Sized>(
    ing: &mut FileIngest<'_, S>,
    src: &mut impl std::io::Read,
    from: u64,
    file_label: &str,
) -> Result<(u64, Vec<RecordError>)> {
    let (mut buf, mut offset) = (Vec::new(), from);
    let (mut errors, mut failure) = (Vec::new(), None);
    crate::reader::read_in_pieces(src, &mut buf, &mut offset, |piece, base| {
        if failure.is_some() {
            // Only reading to the end is left; the failure is the answer.
            return piece.len();
        }
        let (damaged, consumed) = crate::visit_decoded(piece, base, file_label, |at, record| {
            if failure.is_none() {
                failure = ing.decoded(at, &record, true).err();
            }
        });
        errors.extend(damaged);
        consumed
    })
    .map_err(Error::storage)?;
    if let Some(e) = failure {
        return Err(e);
    }
    ing.flush()?;
    Ok((offset, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag becomes a name the store takes, cut by characters as the store counts them (a Chinese tag of 500
    /// characters is whole, not cut to 500 bytes).
    #[test]
    fn tags_become_valid_names() {
        let long = "损".repeat(600);
        assert_eq!(clean_name(&long), "损".repeat(500));
        assert!(is_clean(&"损".repeat(500)) && !is_clean(&long));
        assert_eq!(clean_name(" \u{1}loss\n"), "_loss_");
        assert_eq!(clean_name("  "), "_");
        for tag in [long.as_str(), " \u{1}loss\n", "  ", "train/loss"] {
            assert!(
                validate::name("metric", &clean_name(tag)).is_ok(),
                "{tag:?}"
            );
        }
    }
}
