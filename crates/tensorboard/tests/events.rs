//! Event files end to end: writer → reader round trips, tailing a growing file, truncation and damage.

use flightlog_tensorboard::proto::{event::What, summary::value::Value as V};
use flightlog_tensorboard::record::{encode_record, masked_crc32c};
use flightlog_tensorboard::summary::{self, Datum, ValueDecoder};
use flightlog_tensorboard::*;
use prost::Message;
use std::io::Write;

fn sample_events() -> Vec<Event> {
    vec![
        summary::event(1.5, 0, summary::scalar("loss", 0.25)),
        summary::event(2.000001, 1, summary::text("notes", "| a |\n|---|\n| 1 |")),
        summary::event(
            3.0,
            2,
            summary::histogram("w", &[0.0, 1.0, 2.0], &[2.0, 3.0, 1.0], Some(-1.0)),
        ),
        summary::event(
            4.0,
            3,
            summary::image(
                "img",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x02\0\0\0\x03".to_vec(),
            ),
        ),
    ]
}

fn encoded(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        encode_record(&e.encode_to_vec(), &mut out);
    }
    out
}

#[test]
fn reference_vectors() {
    assert_eq!(masked_crc32c(b"\x1a\x11CRC test, one two"), 0x5794d08a);
    let mut out = Vec::new();
    encode_record(&[0u8; 24], &mut out);
    assert_eq!(&out[8..12], &0x224b7fa3u32.to_le_bytes());
}

#[test]
fn writer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path(), ".flightlog", 1.0).unwrap();
    for e in sample_events() {
        w.write(&e).unwrap();
    }
    let path = w.close().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("events.out.tfevents.") && name.ends_with(".flightlog"));
    assert!(is_event_file_name(&name));
    let mut r = EventFileReader::new(&path);
    let got = r.poll().unwrap();
    assert!(got.errors.is_empty());
    assert_eq!(got.events.len(), 5);
    assert_eq!(got.events[0].0, 0);
    assert_eq!(
        got.events[0].1.what,
        Some(What::FileVersion("brain.Event:2".into()))
    );
    let events: Vec<Event> = got.events[1..].iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(events, sample_events());
    assert!(r.trailing_error().is_none());
}

#[test]
fn decoder_reads_exported_values() {
    let mut d = ValueDecoder::default();
    let kinds: Vec<Datum> = sample_events()
        .iter()
        .map(|e| match &e.what {
            Some(What::Summary(s)) => d.decode(&s.value[0]),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(kinds[0], Datum::Scalar(0.25));
    assert_eq!(kinds[1], Datum::Text("| a |\n|---|\n| 1 |".into()));
    assert_eq!(
        kinds[2],
        Datum::Histogram {
            limits: vec![0.0, 1.0, 2.0],
            counts: vec![2.0, 3.0, 1.0],
            lower: Some(-1.0),
        }
    );
    assert!(matches!(&kinds[3], Datum::Images(v) if v.len() == 1));
    assert_eq!(
        summary::image_size(match &kinds[3] {
            Datum::Images(v) => &v[0],
            _ => unreachable!(),
        }),
        Some((2, 3))
    );
}

#[test]
fn truncation_at_every_offset_waits_then_completes() {
    let bytes = encoded(&sample_events());
    let file = "t";
    for cut in 0..=bytes.len() {
        let first = parse_events(&bytes[..cut], 0, file);
        assert!(first.errors.is_empty(), "cut {cut}: {:?}", first.errors);
        let rest = parse_events(&bytes[first.consumed..], first.consumed as u64, file);
        assert!(rest.errors.is_empty());
        assert_eq!(first.events.len() + rest.events.len(), 4, "cut {cut}");
        assert_eq!(first.consumed + rest.consumed, bytes.len());
    }
}

#[test]
fn tailing_a_growing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.h.1.0");
    let bytes = encoded(&sample_events());
    let mut f = std::fs::File::create(&path).unwrap();
    let mut r = EventFileReader::new(&path);
    let mut seen = 0;
    for chunk in bytes.chunks(7) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        let p = r.poll().unwrap();
        assert!(p.errors.is_empty());
        seen += p.events.len();
    }
    assert_eq!(seen, 4);
    assert_eq!(r.offset(), bytes.len() as u64);
    // Resuming from the saved offset reads nothing twice.
    let mut again = EventFileReader::starting_at(&path, r.offset());
    assert!(again.poll().unwrap().events.is_empty());
}

#[test]
fn a_file_read_in_pieces_gives_what_one_parse_of_it_gives() {
    // Several pieces of scalars, a record larger than a piece, and a damaged length in between.
    let mut events: Vec<Event> = (0..40_000)
        .map(|s| summary::event(s as f64, s, summary::scalar("loss", s as f32)))
        .collect();
    let big = vec![b'x'; reader::READ_PIECE * 3];
    events.insert(
        20_000,
        summary::event(
            1.0,
            7,
            summary::text("notes", std::str::from_utf8(&big).unwrap()),
        ),
    );
    let mut bytes = encoded(&events);
    let damaged = bytes.len() / 3;
    let at = (0..)
        .map(|i| damaged + i)
        .find(|&i| parse_events(&bytes[i..], 0, "f").errors.is_empty())
        .unwrap();
    bytes[at + 9] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.1.h.1.0");
    let whole = parse_events(&bytes, 0, &path.display().to_string());
    assert!(!whole.errors.is_empty());
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let mut r = EventFileReader::new(&path);
    let mut got = r.poll().unwrap();
    assert_eq!(r.pending_bytes(), bytes.len() - 5 - got.consumed);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&bytes[bytes.len() - 5..]).unwrap();
    let rest = r.poll().unwrap();
    got.events.extend(rest.events);
    got.errors.extend(rest.errors);
    assert_eq!(got.events, whole.events);
    assert_eq!(got.errors, whole.errors);
    assert_eq!(r.offset(), bytes.len() as u64);
    assert_eq!(r.pending_bytes(), 0);
}

#[test]
fn truncated_file_reports_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.x");
    let bytes = encoded(&sample_events());
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let mut r = EventFileReader::new(&path);
    assert_eq!(r.poll().unwrap().events.len(), 3);
    let e = r.trailing_error().unwrap();
    assert!(e.to_string().contains("file ends inside a record"), "{e}");
}

#[test]
fn bit_flips_are_reported_and_skipped() {
    let events = sample_events();
    let bytes = encoded(&events);
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let p = parse_events(&b, 0, "f");
        // Every undamaged record survives; the damaged one is reported (or awaited if its length grew).
        assert!(p.events.len() >= 3, "bit {bit}: {} events", p.events.len());
        assert!(p.events.len() + p.errors.len() >= 3);
        for (_, e) in &p.events {
            assert!(
                events.contains(e),
                "bit {bit}: a damaged record was returned"
            );
        }
    }
}

#[test]
fn error_messages_name_file_and_offset() {
    let mut bytes = encoded(&sample_events()[..2]);
    let second = bytes.len() - (sample_events()[1].encoded_len() + 16);
    bytes[second + 14] ^= 0x40; // inside the second record's data
    let p = parse_events(&bytes, 100, "run/events.out.tfevents.1");
    assert_eq!(p.events.len(), 1);
    assert_eq!(
        p.errors[0].to_string(),
        format!(
            "run/events.out.tfevents.1: offset {}: record data checksum mismatch, skipped the record ({} bytes)",
            100 + second,
            bytes.len() - second
        )
    );
    let mut bad_len = encoded(&sample_events()[..2]);
    bad_len[0] ^= 1;
    let p = parse_events(&bad_len, 0, "f");
    assert_eq!(p.events.len(), 1);
    assert_eq!(
        p.errors[0].to_string(),
        format!("f: offset 0: record length checksum mismatch, skipped {second} bytes")
    );
    let mut junk = Vec::new();
    encode_record(b"\xff\xff\xff", &mut junk);
    let p = parse_events(&junk, 0, "f");
    assert!(p.errors[0]
        .to_string()
        .starts_with("f: offset 0: record is not a valid Event: "));
}

#[test]
fn tensor_forms_are_read() {
    use flightlog_tensorboard::proto::summary::Value;
    use flightlog_tensorboard::proto::{
        dtype, tensor_shape_proto::Dim, PluginData, SummaryMetadata, TensorShapeProto,
    };
    let meta = |p: &str| {
        Some(Box::new(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: p.into(),
                content: vec![],
            }),
            ..Default::default()
        }))
    };
    let shape = |d: &[i64]| {
        Some(TensorShapeProto {
            dim: d
                .iter()
                .map(|&size| Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    };
    let tensor = |t: TensorProto, m| Value {
        tag: "t".into(),
        metadata: m,
        value: Some(V::Tensor(Box::new(t))),
        ..Default::default()
    };
    let mut d = ValueDecoder::default();
    let f32_content = TensorProto {
        dtype: dtype::FLOAT,
        tensor_shape: shape(&[]),
        tensor_content: 1.5f32.to_le_bytes().to_vec(),
        ..Default::default()
    };
    assert_eq!(
        d.decode(&tensor(f32_content, meta("scalars"))),
        Datum::Scalar(1.5)
    );
    let f64_val = TensorProto {
        dtype: dtype::DOUBLE,
        tensor_shape: shape(&[]),
        double_val: vec![0.1],
        ..Default::default()
    };
    assert_eq!(d.decode(&tensor(f64_val, None)), Datum::Scalar(0.1));
    let img = TensorProto {
        dtype: dtype::STRING,
        tensor_shape: shape(&[3]),
        string_val: vec![b"2".to_vec(), b"3".to_vec(), b"png".to_vec()],
        ..Default::default()
    };
    let mut d = ValueDecoder::default();
    assert_eq!(
        d.decode(&tensor(img, meta("images"))),
        Datum::Images(vec![b"png".to_vec()])
    );
    let hist = TensorProto {
        dtype: dtype::DOUBLE,
        tensor_shape: shape(&[2, 3]),
        double_val: vec![0.0, 1.0, 5.0, 1.0, 2.0, 7.0],
        ..Default::default()
    };
    let mut d = ValueDecoder::default();
    assert_eq!(
        d.decode(&tensor(hist, meta("histograms"))),
        Datum::Histogram {
            limits: vec![1.0, 2.0],
            counts: vec![5.0, 7.0],
            lower: Some(0.0),
        }
    );
    let table = TensorProto {
        dtype: dtype::STRING,
        tensor_shape: shape(&[2, 2]),
        string_val: vec![b"a".to_vec(), b"b".to_vec(), b"1".to_vec(), b"2".to_vec()],
        ..Default::default()
    };
    let mut d = ValueDecoder::default();
    assert_eq!(
        d.decode(&tensor(table, meta("text"))),
        Datum::Text("| a | b |\n|---|---|\n| 1 | 2 |".into())
    );
}

#[test]
fn fast_scalar_encoding_matches_prost() {
    for (step, tag, t) in [
        (0i64, "a", 0.0),
        (5, "loss/train", 1.7e9),
        (-3, "x", -1.0),
        (i64::MAX, "", 2.5),
    ] {
        let tag = if tag.is_empty() {
            "t".repeat(300)
        } else {
            tag.to_string()
        };
        for v in [0.0f32, 1.5, f32::NAN, f32::NEG_INFINITY] {
            let mut fast = Vec::new();
            summary::encode_scalar_event(&mut fast, t, step, &tag, v);
            let slow = summary::event(t, step, summary::scalar(&tag, v)).encode_to_vec();
            assert_eq!(fast, slow, "step {step} tag {tag} value {v}");
        }
    }
}

/// A sink that keeps what it is given and fails on the batch numbered `fail_at`.
#[derive(Default)]
struct Keep {
    batches: Vec<flightlog_model::Batch>,
    images: Vec<flightlog_model::ImageWrite>,
    fail_at: Option<usize>,
}

impl ingest::IngestSink for Keep {
    fn write_batch(
        &mut self,
        _: &flightlog_model::RunId,
        b: flightlog_model::Batch,
    ) -> flightlog_model::Result<()> {
        if self.fail_at == Some(self.batches.len()) {
            return Err(flightlog_model::Error::storage("disk full"));
        }
        self.batches.push(b);
        Ok(())
    }
    fn write_image(
        &mut self,
        _: &flightlog_model::RunId,
        meta: &flightlog_model::ImageWrite,
        _: &[u8],
    ) -> flightlog_model::Result<()> {
        self.images.push(meta.clone());
        Ok(())
    }
}

#[test]
fn images_have_batch_ids_from_file_record_and_place() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x02\0\0\0\x03".to_vec();
    let two = Event {
        wall_time: 2.0,
        step: 2,
        what: Some(What::Summary(Summary {
            value: vec![
                summary::image("a", png.clone()),
                summary::image("b", png.clone()),
            ],
        })),
    };
    let events = vec![
        summary::event(1.0, 1, summary::image("a", png.clone())),
        two,
    ];
    let buf = encoded(&events);
    let ids = |file: &str| {
        let (mut sink, run) = (Keep::default(), flightlog_model::RunId::new());
        let (mut kinds, mut counts, mut decoder) = Default::default();
        let mut ing =
            ingest::FileIngest::new(&mut sink, &run, file, &mut kinds, &mut counts, &mut decoder);
        ingest::ingest_reader(&mut ing, &mut &buf[..], 0, file).unwrap();
        sink.images
            .into_iter()
            .map(|m| m.batch_id.unwrap())
            .collect::<Vec<_>>()
    };
    let first = ids("f");
    assert_eq!(first.len(), 3);
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), 3, "{first:?}");
    assert_eq!(ids("f"), first, "the same file gives the same ids again");
    assert!(
        ids("g").iter().all(|id| !first.contains(id)),
        "another file, other ids"
    );
}

/// Ingests `buf` (scalar events) through [`ingest::write_behind`] in batches of 1,000 points.
fn ingest_behind(sink: &mut Keep, buf: &[u8]) -> flightlog_model::Result<usize> {
    let run = flightlog_model::RunId::new();
    let (mut kinds, mut counts, mut decoder) = Default::default();
    ingest::write_behind(sink, |s| {
        let mut ing = ingest::FileIngest::new(s, &run, "f", &mut kinds, &mut counts, &mut decoder)
            .batch_points(1000);
        ingest::ingest_reader(&mut ing, &mut &buf[..], 0, "f").map(|(end, _)| end as usize)
    })
}

#[test]
fn write_behind_keeps_order_and_reports_the_first_failed_write() {
    let events: Vec<Event> = (0..2500)
        .map(|s| summary::event(1.7e9 + s as f64, s, summary::scalar("loss", s as f32)))
        .collect();
    let buf = encoded(&events);
    let mut ok = Keep::default();
    assert_eq!(ingest_behind(&mut ok, &buf).unwrap(), buf.len());
    let steps: Vec<i64> = ok
        .batches
        .iter()
        .flat_map(|b| b.scalars[0].steps.clone().unwrap_or_default())
        .map(|s| s.unwrap_or(-1))
        .collect();
    assert_eq!(ok.batches.len(), 3, "2,500 points in batches of 1,000");
    assert_eq!(
        steps,
        (0..2500).collect::<Vec<i64>>(),
        "every point, in order"
    );
    let ids: std::collections::BTreeSet<_> =
        ok.batches.iter().map(|b| b.batch_id.clone()).collect();
    assert_eq!(ids.len(), 3, "each batch has its own id");

    let mut failing = Keep {
        fail_at: Some(1),
        ..Default::default()
    };
    let err = ingest_behind(&mut failing, &buf).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(
        failing.batches.len(),
        1,
        "nothing is written after a failure"
    );
}
