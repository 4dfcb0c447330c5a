//! Where the sender delivers what the data plane queued. By default that is a flightlog server over HTTP; a
//! [`Sink`] (for example the embedded store, in the Python SDK's local mode) takes its place with
//! [`crate::Client::with_sink`], so batching, ordering, retries, the memory bound and the journal are the same
//! code whichever destination is used.

use crate::http::{Http, SendError};
use flightlog_model::*;

/// A destination that applies the data plane's writes itself (no HTTP): what a store offers.
///
/// Errors are classified like HTTP answers: `Transport` and `Storage` errors are retried (with backoff, spooling
/// to the journal meanwhile); every other error rejects the entry (a refused batch is split so that its valid
/// parts are stored).
pub trait Sink: Send + Sync + 'static {
    /// Names the destination in journals and messages, e.g. `file:///home/me/flightlog-data`.
    fn destination(&self) -> &str;
    /// Creates a run (a run with the same id in the same experiment already existing is success).
    fn create_run(&self, new: &NewRun) -> Result<()>;
    /// Applies a batch atomically, deduplicating on its `batch_id`.
    fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck>;
    /// Changes a run.
    fn update_run(&self, run: &RunId, patch: &RunPatch) -> Result<()>;
    /// Stores an image and records it as a point of image metric `meta.name`.
    fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()>;
}

/// The deliveries the sender makes, over HTTP or into a [`Sink`].
pub(crate) trait Deliver {
    fn create_run(&self, new: &NewRun) -> Result<(), SendError>;
    fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck, SendError>;
    fn update_run(&self, run: &RunId, patch: &RunPatch) -> Result<(), SendError>;
    fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<(), SendError>;
}

/// The query of `POST /api/v1/runs/{id}/images`.
pub(crate) fn image_query(meta: &ImageWrite) -> Vec<(&'static str, String)> {
    let mut q = vec![("name", meta.name.clone())];
    if let Some(s) = meta.step {
        q.push(("step", s.to_string()));
    }
    if let Some(d) = &meta.description {
        q.push(("description", d.clone()));
    }
    if let Some(t) = meta.time {
        q.push(("time", t.0.to_string()));
    }
    if let Some(id) = &meta.batch_id {
        q.push(("batch_id", id.clone()));
    }
    q
}

impl Deliver for Http {
    fn create_run(&self, new: &NewRun) -> Result<(), SendError> {
        let _: serde_json::Value = self.try_send_json("POST", "/api/v1/runs", new, Entity::Run)?;
        Ok(())
    }
    fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck, SendError> {
        let Some(base) = batch.batch_id.as_ref().filter(|_| !batch.logs.is_empty()) else {
            return self.try_send_json(
                "POST",
                &format!("/api/v1/runs/{run}/batch"),
                batch,
                Entity::Run,
            );
        };
        // Log text goes as raw bytes (no JSON escaping on either side): the points first, as a batch under
        // the original id, then each append under an id derived from it, so a re-send (a retry, a journal
        // replay) is dropped part by part as a duplicate, just as the whole batch would be.
        let mut ack = BatchAck {
            batch_id: batch.batch_id.clone(),
            points: 0,
            duplicate: true,
        };
        if !batch.scalars.is_empty() || !batch.metrics.is_empty() {
            let points = Batch {
                batch_id: batch.batch_id.clone(),
                scalars: batch.scalars.clone(),
                metrics: batch.metrics.clone(),
                ..Default::default()
            };
            let a: BatchAck = self.try_send_json(
                "POST",
                &format!("/api/v1/runs/{run}/batch"),
                &points,
                Entity::Run,
            )?;
            ack.points += a.points;
            ack.duplicate &= a.duplicate;
        }
        for (i, log) in batch.logs.iter().enumerate() {
            let path = format!(
                "/api/v1/runs/{run}/logs/{}",
                crate::http::encode_segment(&log.stream)
            );
            let a: BatchAck = self.try_send_bytes(
                "POST",
                &path,
                &[("batch_id", format!("{base}.log{i}"))],
                log.data.as_bytes(),
                "text/plain; charset=utf-8",
                Entity::Run,
            )?;
            ack.duplicate &= a.duplicate;
        }
        Ok(ack)
    }
    fn update_run(&self, run: &RunId, patch: &RunPatch) -> Result<(), SendError> {
        let _: serde_json::Value =
            self.try_send_json("PATCH", &format!("/api/v1/runs/{run}"), patch, Entity::Run)?;
        Ok(())
    }
    fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<(), SendError> {
        let path = format!("/api/v1/runs/{run}/images");
        let _: serde_json::Value = self.try_send_bytes(
            "POST",
            &path,
            &image_query(meta),
            bytes,
            &meta.media_type,
            Entity::Metric,
        )?;
        Ok(())
    }
}

fn classify(e: Error) -> SendError {
    match e {
        Error::Transport(_) | Error::Storage(_) => SendError::Retry(e),
        other => SendError::Reject(other),
    }
}

/// A [`Sink`] seen as a delivery target.
pub(crate) struct SinkDeliver<'a>(pub &'a dyn Sink);

impl Deliver for SinkDeliver<'_> {
    fn create_run(&self, new: &NewRun) -> Result<(), SendError> {
        self.0.create_run(new).map_err(classify)
    }
    fn write_batch(&self, run: &RunId, batch: &Batch) -> Result<BatchAck, SendError> {
        self.0.write_batch(run, batch).map_err(classify)
    }
    fn update_run(&self, run: &RunId, patch: &RunPatch) -> Result<(), SendError> {
        self.0.update_run(run, patch).map_err(classify)
    }
    fn write_image(&self, run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<(), SendError> {
        self.0.write_image(run, meta, bytes).map_err(classify)
    }
}
