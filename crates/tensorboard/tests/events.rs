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
    // A file of bytes that were never a record says so, rather than that it ends inside one.
    std::fs::write(&path, [0xffu8; 100]).unwrap();
    let mut r = EventFileReader::new(&path);
    assert!(r.poll().unwrap().events.is_empty());
    assert_eq!(
        r.trailing_error().unwrap().to_string(),
        format!("{}: offset 0: the last 100 bytes hold no valid record (damaged, or not TensorBoard event data), ignored them", path.display())
    );
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
    params: std::collections::BTreeMap<String, String>,
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
    fn write_params(
        &mut self,
        _: &flightlog_model::RunId,
        params: std::collections::BTreeMap<String, String>,
    ) -> flightlog_model::Result<()> {
        self.params.extend(params);
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
        let mut ing = ingest::FileIngest::new(
            &mut sink,
            &run,
            (file, None),
            &mut kinds,
            &mut counts,
            &mut decoder,
        );
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

/// A file's identity is its first record: none until that record is whole, the same for the same file however
/// much of it is read, another for a file created at another time; and batch ids follow it, so a replaced
/// file's batches are not taken for the old one's.
#[test]
fn a_files_identity_is_its_first_record_and_batch_ids_follow_it() {
    let file = |created: f64| {
        encoded(&vec![
            summary::event(created, 0, summary::scalar("a", 1.0));
            3
        ])
    };
    let identity = |b: &[u8]| read_identity(&mut &b[..]).unwrap().0;
    let (one, two) = (file(1.0), file(2.0));
    let first_len = one.len() / 3;
    // The data's checksum (the last 4 bytes) is not part of it.
    assert_eq!(
        identity(&one[..first_len - 5]),
        None,
        "first record's data not whole yet"
    );
    assert_eq!(identity(&one[..first_len]), identity(&one));
    assert!(identity(&one).is_some());
    assert_ne!(identity(&one), identity(&two));
    let (mut head_and_rest, mut src) = (Vec::new(), &one[..]);
    let (_, head) = read_identity(&mut src).unwrap();
    head_and_rest.extend(head);
    head_and_rest.extend(src);
    assert_eq!(
        head_and_rest, one,
        "the bytes read for the identity are the file's start"
    );
    let batch_id = |id: Option<u64>| {
        let (mut sink, run) = (Keep::default(), flightlog_model::RunId::new());
        let (mut kinds, mut counts, mut decoder) = Default::default();
        let mut ing = ingest::FileIngest::new(
            &mut sink,
            &run,
            ("f", id),
            &mut kinds,
            &mut counts,
            &mut decoder,
        );
        ingest::ingest_reader(&mut ing, &mut &one[..], 0, "f").unwrap();
        sink.batches[0].batch_id.clone().unwrap()
    };
    assert_eq!(batch_id(identity(&one)), batch_id(identity(&one)));
    assert_ne!(batch_id(identity(&one)), batch_id(identity(&two)));
}

fn with_plugin(tag: &str, plugin: &str, content: Vec<u8>) -> proto::summary::Value {
    proto::summary::Value {
        tag: tag.into(),
        metadata: Some(Box::new(SummaryMetadata {
            plugin_data: Some(proto::PluginData {
                plugin_name: plugin.into(),
                content,
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Values of a plugin flightlog has no kind for are skipped under the plugin's name, not by what their value
/// looks like (an hparams or pr_curves value once read as "empty value").
#[test]
fn values_of_unsupported_plugins_are_skipped_by_plugin_name() {
    let mut d = ValueDecoder::default();
    let pr = with_plugin("pr", "pr_curves", vec![]);
    assert!(
        matches!(d.decode(&pr), Datum::Unsupported(why) if why.starts_with("pr_curves plugin"))
    );
    let plain = with_plugin("x", "", vec![]);
    assert!(matches!(
        d.decode(&plain),
        Datum::Unsupported("empty value")
    ));
}

/// A session's hyperparameters (the hparams plugin's session start) become params: numbers without a needless
/// fraction, booleans as Python writes them; nulls and lists have no param form. The experiment's config is
/// skipped under its name, and content that is no hparams data is called malformed.
#[test]
fn a_sessions_hyperparameters_become_params() {
    use proto::proto_value::Kind;
    let value = |k: Kind| proto::ProtoValue { kind: Some(k) };
    let start = proto::HParamsPluginData {
        version: 0,
        session_start_info: Some(proto::SessionStartInfo {
            hparams: [
                ("lr", value(Kind::NumberValue(0.001))),
                ("batch", value(Kind::NumberValue(32.0))),
                ("optimizer", value(Kind::StringValue("adam".into()))),
                ("dropout", value(Kind::BoolValue(true))),
                ("none", value(Kind::NullValue(0))),
                ("list", value(Kind::ListValue(vec![]))),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            start_time_secs: 1.0,
        }),
    };
    let mut d = ValueDecoder::default();
    let Datum::Params(params) = d.decode(&with_plugin(
        "_hparams_/session_start_info",
        "hparams",
        start.encode_to_vec(),
    )) else {
        panic!("not params");
    };
    let want = [
        ("batch", "32"),
        ("dropout", "True"),
        ("lr", "0.001"),
        ("optimizer", "adam"),
    ];
    let want: std::collections::BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(params, want);
    let config = proto::HParamsPluginData::default().encode_to_vec();
    let experiment = with_plugin("_hparams_/experiment", "hparams", config);
    assert!(matches!(
        d.decode(&experiment),
        Datum::Unsupported("hparams plugin (experiment config or session end)")
    ));
    let bad = with_plugin("_hparams_/x", "hparams", vec![1, 2]);
    assert!(matches!(
        d.decode(&bad),
        Datum::Unsupported("malformed hparams plugin data")
    ));
}

/// Ingested hyperparameters go to the run once: one the run holds with the same value is not sent again, one
/// with another value is skipped with a reason that names both values.
#[test]
fn hyperparameters_are_added_once_and_a_changed_one_is_skipped() {
    use proto::proto_value::Kind;
    let session = |lr: f64| {
        let start = proto::HParamsPluginData {
            version: 0,
            session_start_info: Some(proto::SessionStartInfo {
                hparams: [(
                    "lr".to_string(),
                    proto::ProtoValue {
                        kind: Some(Kind::NumberValue(lr)),
                    },
                )]
                .into(),
                start_time_secs: 1.0,
            }),
        };
        let v = with_plugin(
            "_hparams_/session_start_info",
            "hparams",
            start.encode_to_vec(),
        );
        Event {
            wall_time: 1.0,
            step: 0,
            what: Some(What::Summary(Summary { value: vec![v] })),
        }
    };
    let buf = encoded(&[session(0.5), session(0.5), session(0.25)]);
    let (mut sink, run) = (Keep::default(), flightlog_model::RunId::new());
    let (mut stored, mut counts, mut decoder) = Default::default();
    let mut ing = ingest::FileIngest::new(
        &mut sink,
        &run,
        ("f", None),
        &mut stored,
        &mut counts,
        &mut decoder,
    );
    ingest::ingest_reader(&mut ing, &mut &buf[..], 0, "f").unwrap();
    assert_eq!(sink.params.get("lr").map(String::as_str), Some("0.5"));
    assert_eq!(counts.params, 1);
    let why = "hparams: invalid param: 'lr' holds '0.5' already, not '0.25'";
    assert_eq!(counts.skipped.get(why), Some(&1), "{:?}", counts.skipped);
}
