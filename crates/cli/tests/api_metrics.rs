//! API suite, metrics against the real binary: every metric kind through the batch endpoint, reads (JSON,
//! binary, ranges, downsampling), images, batch dedupe, and kind conflicts.

mod common;

use common::{assert_error, enc, TestServer};
use serde_json::{json, Value};

#[test]
fn scalars_round_trip_with_non_finite_values_and_unicode_names() {
    let s = TestServer::start();
    let id = s.new_run();
    let name = "train/loss 損失";
    let batch = json!({"scalars": [
        {"name": name, "steps": [0, 1, 2, 5], "times": [10, 20, 30, 40], "values": [0.5, "NaN", "Infinity", -1.25]},
        {"name": "acc", "values": [0.1, 0.2, 0.3]},
    ]});
    let (status, ack) = s.post(&format!("/api/v1/runs/{id}/batch"), &batch);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["points"], 7);
    assert_eq!(ack["duplicate"], false);

    let (status, read) = s.get(&format!("/api/v1/runs/{id}/metrics/{}", enc(name)));
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["info"]["name"], name);
    assert_eq!(read["info"]["kind"], "scalar");
    assert_eq!(read["steps"], json!([0, 1, 2, 5]));
    assert_eq!(read["times"], json!([10, 20, 30, 40]));
    assert_eq!(read["values"], json!([0.5, "NaN", "Infinity", -1.25]));

    // A '/' may also travel unencoded: the name is the rest of the path.
    let (status, read) = s.get(&format!(
        "/api/v1/runs/{id}/metrics/train/{}",
        enc("loss 損失")
    ));
    assert_eq!(status, 200, "{read}");

    // Steps default to 0, 1, 2...
    let (_, acc) = s.get(&format!("/api/v1/runs/{id}/metrics/acc"));
    assert_eq!(acc["steps"], json!([0, 1, 2]));

    // Ranges.
    let (_, part) = s.get(&format!(
        "/api/v1/runs/{id}/metrics/{}?start_index=1&limit=2",
        enc(name)
    ));
    assert_eq!(part["steps"], json!([1, 2]));
    let (_, part) = s.get(&format!(
        "/api/v1/runs/{id}/metrics/{}?min_step=2&max_step=5",
        enc(name)
    ));
    assert_eq!(part["steps"], json!([2, 5]));

    // Binary: count, steps, times, values (NaN kept).
    let (status, bytes, headers) = s.get_bytes(&format!(
        "/api/v1/runs/{id}/metrics/{}?format=binary",
        enc(name)
    ));
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(bytes.len(), 8 + 4 * 24);
    let word = |i: usize| <[u8; 8]>::try_from(&bytes[i * 8..i * 8 + 8]).unwrap();
    assert_eq!(u64::from_le_bytes(word(0)), 4);
    assert_eq!(i64::from_le_bytes(word(4)), 5);
    assert_eq!(i64::from_le_bytes(word(5)), 10);
    assert!(f64::from_le_bytes(word(10)).is_nan());
    assert_eq!(f64::from_le_bytes(word(12)), -1.25);

    // Listing with summaries; the run carries latest values.
    let (_, list) = s.get(&format!("/api/v1/runs/{id}/metrics"));
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&name) && names.contains(&"acc"), "{list}");
    let (_, run) = s.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(run["metrics"].as_array().unwrap().len(), 2, "{run}");

    // Unknown metric → 404 naming it; bad query → 400 naming the parameter.
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/metrics/nope")),
        404,
        "NOT_FOUND",
        "nope",
    );
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/metrics/acc?limit=-1")),
        400,
        "INVALID_ARGUMENT",
        "limit",
    );
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/metrics/acc?format=xml")),
        400,
        "INVALID_ARGUMENT",
        "format",
    );
}

#[test]
fn downsampling_keeps_spikes() {
    let s = TestServer::start();
    let id = s.new_run();
    let mut values: Vec<Value> = (0..10_000)
        .map(|i| json!((i as f64 * 0.01).sin()))
        .collect();
    values[7777] = json!(1000.0);
    let (status, ack) = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "x", "values": values}]}),
    );
    assert_eq!(status, 200, "{ack}");
    let (status, read) = s.get(&format!("/api/v1/runs/{id}/metrics/x?buckets=100"));
    assert_eq!(status, 200);
    let vals = read["values"].as_array().unwrap();
    assert!(
        vals.len() <= 200 && vals.len() >= 100,
        "{} points",
        vals.len()
    );
    assert!(vals.iter().any(|v| v == &json!(1000.0)), "spike lost");
    // The binary overview says how long the series is, which its points do not.
    let (status, bytes, headers) = s.get_bytes(&format!(
        "/api/v1/runs/{id}/metrics/x?buckets=100&format=binary"
    ));
    assert_eq!(status, 200);
    assert!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) <= 200);
    assert_eq!(headers["x-series-count"], "10000");
    let steps: Vec<i64> = read["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "steps out of order");
}

#[test]
fn every_other_kind_round_trips() {
    let s = TestServer::start();
    let id = s.new_run();
    let batch = json!({"batch_id": "kinds-1", "metrics": [
        {"kind": "text", "name": "msg", "values": ["hello", "wörld"]},
        {"kind": "list", "name": "lst", "values": [1, 2.5, "NaN"]},
        {"kind": "row", "name": "rows", "rows": [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.75, "note": "best"}]},
        {"kind": "table", "name": "tbl", "columns": {"x": [1, 2, 3], "y": ["a", "b", null]}},
        {"kind": "json", "name": "cm", "schema": "confusion_matrix", "value": {"labels": ["a", "b"], "matrix": [[1, 2], [3, 4]]}},
        {"kind": "histogram", "name": "h", "limits": [0, 1, 2], "counts": [3, 4, 5], "step": 7},
    ], "logs": [{"stream": "stdout", "data": "from a batch\n"}]});
    let (status, ack) = s.post(&format!("/api/v1/runs/{id}/batch"), &batch);
    assert_eq!(status, 200, "{ack}");

    let read = |name: &str| {
        let (status, body) = s.get(&format!("/api/v1/runs/{id}/metrics/{name}"));
        assert_eq!(status, 200, "{body}");
        body
    };
    let text = read("msg");
    assert_eq!(text["info"]["kind"], "text");
    let recs = text["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["value"], "wörld");
    let lst = read("lst");
    assert_eq!(lst["info"]["kind"], "list");
    assert_eq!(lst["records"][0]["value"], json!([1.0, 2.5, "NaN"]));
    let rows = read("rows");
    assert_eq!(rows["info"]["kind"], "row");
    assert_eq!(rows["records"].as_array().unwrap().len(), 2);
    assert_eq!(rows["records"][1]["value"]["note"], "best");
    let tbl = read("tbl");
    assert_eq!(tbl["info"]["kind"], "table");
    assert_eq!(
        tbl["records"][0]["value"]["x"],
        json!([1.0, 2.0, 3.0]),
        "{tbl}"
    );
    assert_eq!(tbl["records"][0]["value"]["y"], json!(["a", "b", null]));
    let cm = read("cm");
    assert_eq!(cm["info"]["kind"], "json");
    assert_eq!(cm["records"][0]["value"]["schema"], "confusion_matrix");
    let h = read("h");
    assert_eq!(h["info"]["kind"], "histogram");
    assert_eq!(h["records"][0]["step"], 7);

    // Scalar-only options on another kind → 400 naming the option.
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/metrics/msg?format=binary")),
        400,
        "INVALID_ARGUMENT",
        "format",
    );

    // Logging a metric as another kind → 409, and the whole batch is refused.
    let r = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "fresh", "values": [1]}, {"name": "msg", "values": [1]}]}),
    );
    assert_error(&r, 409, "CONFLICT", "msg");
    assert_error(
        &s.get(&format!("/api/v1/runs/{id}/metrics/fresh")),
        404,
        "NOT_FOUND",
        "fresh",
    );

    // Replaying the batch id is acknowledged without storing twice.
    let (status, again) = s.post(&format!("/api/v1/runs/{id}/batch"), &batch);
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(read("msg")["records"].as_array().unwrap().len(), 2);
    let (_, log) = s.get(&format!("/api/v1/runs/{id}/logs/stdout"));
    assert_eq!(log["data"], "from a batch\n");
}

#[test]
fn images_are_stored_as_artifacts_and_points() {
    let s = TestServer::start();
    let id = s.new_run();
    // A 1x1 PNG.
    let png: Vec<u8> = vec![
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F,
        0x15, 0xC4, 0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00,
        0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ];
    let path = format!(
        "/api/v1/runs/{id}/images?name={}&step=3&description=a%20plot",
        enc("samples/grid")
    );
    let (status, rec) = s.send_raw("POST", &path, "image/png", &png);
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["step"], 3);
    let stored = rec["value"]["path"]
        .as_str()
        .expect("image path")
        .to_string();

    let (status, read) = s.get(&format!(
        "/api/v1/runs/{id}/metrics/{}",
        enc("samples/grid")
    ));
    assert_eq!(status, 200);
    assert_eq!(read["info"]["kind"], "image");
    assert_eq!(read["records"][0]["value"]["path"], stored.as_str());

    let (status, bytes, headers) = s.get_bytes(&format!("/api/v1/runs/{id}/artifacts/{stored}"));
    assert_eq!(status, 200);
    assert_eq!(bytes, png);
    assert_eq!(headers["content-type"], "image/png");

    // Bytes that are not the claimed image, or no name → 400.
    let r = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{id}/images?name=bad"),
        "image/png",
        b"not a png",
    );
    assert_eq!(r.0, 400, "{}", r.1);
    let r = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{id}/images"),
        "image/png",
        &png,
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "name");
    let r = s.send_raw(
        "POST",
        &format!("/api/v1/runs/{id}/images?name=x&step=two"),
        "image/png",
        &png,
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "step");
}

#[test]
fn binary_scalar_batches_store_every_point_once_and_bad_bodies_are_400() {
    use flightlog_model::{scalar_wire, Batch, ScalarWrite, WallTime, F64};
    let s = TestServer::start();
    let id = s.new_run();
    let batch = Batch {
        batch_id: Some("bin-1".into()),
        scalars: vec![ScalarWrite {
            name: "loss".into(),
            description: None,
            steps: Some(vec![Some(3), Some(7), Some(9)]),
            times: Some(vec![WallTime(10), WallTime(20), WallTime(30)]),
            values: vec![F64(0.5), F64(f64::NAN), F64(-2.0)],
        }],
        ..Default::default()
    };
    let body = scalar_wire::encode(&batch).expect("a scalar batch has a binary form");
    let path = format!("/api/v1/runs/{id}/batch");
    let (status, ack) = s.send_raw("POST", &path, scalar_wire::MEDIA_TYPE, &body);
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        (ack["points"].clone(), ack["duplicate"].clone()),
        (json!(3), json!(false))
    );
    let (status, again) = s.send_raw("POST", &path, scalar_wire::MEDIA_TYPE, &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "the same batch id is stored once");

    let (_, read) = s.get(&format!("/api/v1/runs/{id}/metrics/loss"));
    assert_eq!(read["steps"], json!([3, 7, 9]));
    assert_eq!(read["times"], json!([10, 20, 30]));
    assert_eq!(read["values"], json!([0.5, "NaN", -2.0]));

    let resp = s.send_raw(
        "POST",
        &path,
        scalar_wire::MEDIA_TYPE,
        &body[..body.len() - 1],
    );
    assert_error(&resp, 400, "INVALID_ARGUMENT", "binary scalar batch");
    let (_, info) = s.get(&format!("/api/v1/runs/{id}/metrics"));
    assert_eq!(
        info["items"][0]["count"], 3,
        "a rejected body stores nothing"
    );
}

/// A read of more than 2M points by index is streamed from the store a chunk at a time; its body is the one
/// the same points give read by step bounds (read whole, then streamed from memory), in JSON and in binary.
#[test]
fn huge_reads_stream_from_the_store_the_points_a_whole_read_gives() {
    use flightlog_model::{scalar_wire, Batch, ScalarWrite, WallTime, F64};
    let s = TestServer::start();
    let id = s.new_run();
    let n: i64 = 2_100_000;
    for from in (0..n).step_by(300_000) {
        let steps: Vec<i64> = (from..(from + 300_000).min(n)).collect();
        let batch = Batch {
            scalars: vec![ScalarWrite {
                name: "loss".into(),
                description: None,
                steps: Some(steps.iter().map(|&i| Some(i)).collect()),
                times: Some(steps.iter().map(|&i| WallTime(i * 1000)).collect()),
                values: steps.iter().map(|&i| F64(i as f64 / 3.0)).collect(),
            }],
            ..Default::default()
        };
        let body = scalar_wire::encode(&batch).expect("a scalar batch has a binary form");
        let path = format!("/api/v1/runs/{id}/batch");
        let (status, ack) = s.send_raw("POST", &path, scalar_wire::MEDIA_TYPE, &body);
        assert_eq!(status, 200, "{ack}");
    }
    let read = |query: &str| {
        let (status, body, _) = s.get_bytes(&format!("/api/v1/runs/{id}/metrics/loss?{query}"));
        assert_eq!(status, 200, "{query}");
        body
    };
    // 2,050,000 points: over the streaming threshold either way.
    let by_index = read("start_index=50000&limit=2050000");
    assert_eq!(by_index, read("min_step=50000&max_step=2099999"));
    let text = String::from_utf8_lossy(&by_index);
    assert!(
        text.contains(r#","steps":[50000,50001,"#),
        "{}",
        &text[..300]
    );
    assert!(
        text.ends_with(",699999.6666666666]}"),
        "{}",
        &text[text.len() - 100..]
    );

    let binary = read("start_index=50000&limit=2050000&format=binary");
    assert_eq!(
        binary,
        read("min_step=50000&max_step=2099999&format=binary")
    );
    assert_eq!(binary.len(), 8 + 24 * 2_050_000);
    let word = |i: usize| i64::from_le_bytes(binary[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    assert_eq!(
        u64::from_le_bytes(binary[..8].try_into().unwrap()),
        2_050_000
    );
    assert_eq!((word(0), word(2_049_999)), (50_000, 2_099_999));
    assert_eq!(
        word(2_050_000),
        50_000_000,
        "the first time, after every step"
    );
}
