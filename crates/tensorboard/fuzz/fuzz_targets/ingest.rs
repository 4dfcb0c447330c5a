//! Fuzzes what lies behind the framing: the input, cut into pieces at 0xFF bytes, is framed as valid records
//! (so the CRCs pass) and read through the whole ingest mapping (Event decoding, ValueDecoder, FileIngest with
//! a sink that only checks what it gets): no panic, batches well-formed, offsets and batch ids consistent.
#![no_main]

use flightlog_model::{Batch, ImageWrite, Result, RunId};
use flightlog_tensorboard::ingest::{ingest_reader, FileIngest, IngestCounts, IngestSink};
use flightlog_tensorboard::record::encode_record;
use flightlog_tensorboard::ValueDecoder;
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};

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
            let n = s.values.len();
            assert!(s.steps.as_ref().is_none_or(|v| v.len() == n));
            assert!(s.times.as_ref().is_none_or(|v| v.len() == n));
            self.points += n as u64;
        }
        Ok(())
    }
    fn write_image(&mut self, _run: &RunId, _meta: &ImageWrite, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut file = Vec::new();
    for piece in data.split(|&b| b == 0xff) {
        encode_record(piece, &mut file);
    }
    let run = RunId::default();
    let (mut kinds, mut counts, mut decoder) = (
        HashMap::new(),
        IngestCounts::default(),
        ValueDecoder::default(),
    );
    let mut sink = Checking::default();
    let mut ing = FileIngest::new(&mut sink, &run, "f", &mut kinds, &mut counts, &mut decoder);
    let (end, _errors) =
        ingest_reader(&mut ing, &mut &file[..], 0, "fuzz").expect("sink never fails");
    assert_eq!(end as usize, file.len(), "every framed record is consumed");
    assert_eq!(sink.points, counts.scalar_points);
});
