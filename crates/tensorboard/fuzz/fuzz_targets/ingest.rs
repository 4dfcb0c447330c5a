//! Fuzzes what lies behind the framing: the input, cut into pieces at 0xFF bytes, is framed as valid records
//! (so the CRCs pass) and read through the whole ingest mapping (Event decoding, ValueDecoder, FileIngest with
//! a sink that only checks what it gets): no panic, batches the store takes (its own validation passes: a value
//! it would refuse is skipped, not sent), offsets and batch ids consistent.
#![no_main]

use flightlog_model::{validate, Batch, ImageWrite, Result, RunId};
use flightlog_tensorboard::ingest::{
    ingest_reader, FileIngest, IngestCounts, IngestSink, StoredRun,
};
use flightlog_tensorboard::record::encode_record;
use flightlog_tensorboard::ValueDecoder;
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, HashSet};

#[derive(Default)]
struct Checking {
    ids: HashSet<String>,
    points: u64,
}

impl IngestSink for Checking {
    fn write_batch(&mut self, _run: &RunId, batch: Batch) -> Result<()> {
        let id = batch.batch_id.clone().expect("batch id");
        assert!(self.ids.insert(id), "a batch id repeats within one pass");
        for s in &batch.scalars {
            validate::scalar_write(s).expect("the store takes every scalar series");
            self.points += s.values.len() as u64;
        }
        for m in &batch.metrics {
            validate::metric_write(m).expect("the store takes every metric write");
        }
        Ok(())
    }
    fn write_image(&mut self, _run: &RunId, meta: &ImageWrite, bytes: &[u8]) -> Result<()> {
        validate::name("metric name", &meta.name).expect("a valid image name");
        validate::image_size(bytes.len()).expect("an image the store takes");
        Ok(())
    }
    fn write_params(&mut self, _run: &RunId, params: BTreeMap<String, String>) -> Result<()> {
        for (name, value) in &params {
            validate::name("param", name).expect("a valid param name");
            validate::value("param", value).expect("a valid param value");
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut file = Vec::new();
    for piece in data.split(|&b| b == 0xff) {
        encode_record(piece, &mut file);
    }
    let run = RunId::default();
    let (mut stored, mut counts, mut decoder) = (
        StoredRun::default(),
        IngestCounts::default(),
        ValueDecoder::default(),
    );
    let mut sink = Checking::default();
    let mut ing = FileIngest::new(&mut sink, &run, ("f", None), &mut stored, &mut counts, &mut decoder);
    let (end, _errors) =
        ingest_reader(&mut ing, &mut &file[..], 0, "fuzz").expect("sink never fails");
    assert_eq!(end as usize, file.len(), "every framed record is consumed");
    assert_eq!(sink.points, counts.scalar_points);
});
