//! API suite, core resources against the real binary: health, OpenAPI, experiments, runs, and every class of
//! bad input (each must be a JSON 4xx naming the culprit and must change nothing).

mod common;

use common::{assert_error, enc, TestServer};
use serde_json::{json, Value};

#[test]
fn health_and_openapi() {
    let s = TestServer::start();
    let (status, body) = s.get("/health");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert!(body["version"].as_str().is_some_and(|v| !v.is_empty()));

    let (status, doc) = s.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"]
        .as_str()
        .unwrap_or_default()
        .starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/health",
        "/api/v1/experiments",
        "/api/v1/experiments/{id}",
        "/api/v1/experiments/by-name/{name}",
        "/api/v1/experiments/{id}/events",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/batch",
        "/api/v1/runs/{id}/images",
        "/api/v1/runs/{id}/metrics",
        "/api/v1/runs/{id}/metrics/{name}",
        "/api/v1/runs/{id}/logs",
        "/api/v1/runs/{id}/logs/{stream}",
        "/api/v1/runs/{id}/artifacts",
        "/api/v1/runs/{id}/artifacts/{path}",
        "/api/v1/runs/{id}/events",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}

#[test]
fn experiments_crud() {
    let s = TestServer::start();
    let (status, exp) = s.post(
        "/api/v1/experiments",
        &json!({"name": "vision/resnet 損失", "tags": {"team": "cv"}}),
    );
    assert_eq!(status, 201, "{exp}");
    let id = exp["id"].as_str().unwrap().to_string();
    assert_eq!(exp["name"], "vision/resnet 損失");
    assert_eq!(exp["tags"]["team"], "cv");

    let (status, got) = s.get(&format!("/api/v1/experiments/{id}"));
    assert_eq!(status, 200);
    assert_eq!(got["name"], exp["name"]);

    let (status, by_name) = s.get(&format!(
        "/api/v1/experiments/by-name/{}",
        enc("vision/resnet 損失")
    ));
    assert_eq!(status, 200, "{by_name}");
    assert_eq!(by_name["id"], id);

    // Duplicate name → 409, and nothing new appears.
    assert_error(
        &s.post(
            "/api/v1/experiments",
            &json!({"name": "vision/resnet 損失"}),
        ),
        409,
        "ALREADY_EXISTS",
        "resnet",
    );

    let (status, list) = s.get("/api/v1/experiments?name_contains=RESNET");
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");

    let (status, patched) = s.patch(
        &format!("/api/v1/experiments/{id}"),
        &json!({"set_tags": {"stage": "2"}, "remove_tags": ["team"]}),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["tags"], json!({"stage": "2"}));

    let (status, deleted) = s.patch(
        &format!("/api/v1/experiments/{id}"),
        &json!({"lifecycle": "deleted"}),
    );
    assert_eq!(status, 200, "{deleted}");
    let (_, list) = s.get("/api/v1/experiments?name_contains=resnet");
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (_, list) = s.get("/api/v1/experiments?name_contains=resnet&include_deleted=true");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // The Default experiment always exists.
    let (status, default) = s.get("/api/v1/experiments/0");
    assert_eq!(status, 200);
    assert_eq!(default["name"], "Default");
    let r = s.patch("/api/v1/experiments/0", &json!({"lifecycle": "deleted"}));
    assert_error(
        &r,
        400,
        "INVALID_ARGUMENT",
        "Default experiment '0' cannot be deleted",
    );
    let r = s.post(
        "/api/2.0/mlflow/experiments/delete",
        &json!({"experiment_id": "0"}),
    );
    assert_eq!(r.0, 400, "{}", r.1);
    assert_eq!(r.1["error_code"], "INVALID_PARAMETER_VALUE");
    assert_eq!(s.get("/api/v1/experiments/0").1["lifecycle"], "active");

    // Paging: limit 1 gives a token that leads to the rest.
    for i in 0..3 {
        s.new_experiment(&format!("page-{i}"));
    }
    let (_, p1) = s.get("/api/v1/experiments?name_contains=page-&limit=2");
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let token = p1["next_page_token"].as_str().expect("token").to_string();
    let (_, p2) = s.get(&format!(
        "/api/v1/experiments?name_contains=page-&limit=2&page_token={}",
        enc(&token)
    ));
    assert_eq!(p2["items"].as_array().unwrap().len(), 1, "{p2}");
    assert!(
        !matches!(p2.get("next_page_token"), Some(Value::String(_))),
        "{p2}"
    );
}

#[test]
fn runs_crud_and_filters() {
    let s = TestServer::start();
    let exp = s.new_experiment("filters");
    let mk = |body: Value| {
        let (status, run) = s.post("/api/v1/runs", &body);
        assert_eq!(status, 201, "{run}");
        run
    };
    let a = mk(
        json!({"experiment_id": exp, "display_name": "a", "tags": {"lr": "0.1", "opt": "adam"}}),
    );
    let b = mk(
        json!({"experiment_id": exp, "display_name": "b", "tags": {"lr": "0.2"}, "properties": {"git": "abc"}}),
    );
    let child = mk(json!({"experiment_id": exp, "display_name": "c", "parent_id": a["id"]}));
    assert_eq!(a["status"], "Running");
    let (aid, bid) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let ids = |query: &str| -> Vec<String> {
        let (status, page) = s.get(&format!("/api/v1/runs?experiment_id={exp}&{query}"));
        assert_eq!(status, 200, "{page}");
        let mut v: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<&str>| {
        v.sort();
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(ids("").len(), 3);
    assert_eq!(ids("tag=lr"), sorted(vec![aid, bid]));
    assert_eq!(ids("tag=lr%3D0.1"), sorted(vec![aid]));
    assert_eq!(ids("tag=lr=0.2&tag=opt"), Vec::<String>::new());
    assert_eq!(ids("property=git=abc"), sorted(vec![bid]));
    assert_eq!(ids("top_level_only=true"), sorted(vec![aid, bid]));
    assert_eq!(
        ids(&format!("parent_id={aid}")),
        sorted(vec![child["id"].as_str().unwrap()])
    );

    let (status, done) = s.patch(
        &format!("/api/v1/runs/{bid}"),
        &json!({"status": "Completed"}),
    );
    assert_eq!(status, 200, "{done}");
    assert!(done["end_time"].is_i64());
    assert_eq!(ids("status=Completed"), sorted(vec![bid]));
    assert_eq!(ids("status=Completed&status=Running").len(), 3);

    // Idempotent create with a client id: 201, then 200 with the same run.
    let rid = "0123456789abcdef0123456789abcdef";
    let (s1, r1) = s.post(
        "/api/v1/runs",
        &json!({"id": rid, "experiment_id": exp, "display_name": "x"}),
    );
    let (s2, r2) = s.post(
        "/api/v1/runs",
        &json!({"id": rid, "experiment_id": exp, "display_name": "x"}),
    );
    assert_eq!((s1, s2), (201, 200), "{r1} {r2}");
    assert_eq!(r1["id"], r2["id"]);

    let (status, got) = s.get(&format!("/api/v1/runs/{aid}"));
    assert_eq!(status, 200);
    assert_eq!(got["tags"]["opt"], "adam");
}

#[test]
fn run_rules_are_enforced_and_rejections_change_nothing() {
    let s = TestServer::start();
    let id = s.new_run();
    let path = format!("/api/v1/runs/{id}");
    let (status, _) = s.patch(
        &path,
        &json!({"add_properties": {"git": "abc"}, "add_params": {"lr": "0.1"}}),
    );
    assert_eq!(status, 200);
    let (_, before) = s.get(&path);

    // Property rewritten → 409, and the tag in the same patch is not applied either.
    let r = s.patch(
        &path,
        &json!({"add_properties": {"git": "def"}, "set_tags": {"t": "1"}}),
    );
    assert_error(&r, 409, "CONFLICT", "git");
    let r = s.patch(&path, &json!({"add_params": {"lr": "0.2"}}));
    assert_eq!(r.0, 409, "{}", r.1);
    // Same value again is a no-op.
    assert_eq!(
        s.patch(&path, &json!({"add_properties": {"git": "abc"}})).0,
        200
    );

    // Illegal transition → 409 naming both states.
    assert_eq!(s.patch(&path, &json!({"status": "Completed"})).0, 200);
    let r = s.patch(&path, &json!({"status": "Running", "set_tags": {"t": "2"}}));
    assert_error(&r, 409, "ILLEGAL_TRANSITION", "Completed");

    let (_, after) = s.get(&path);
    assert_eq!(after["tags"], before["tags"]);
    assert_eq!(after["properties"], before["properties"]);
    assert_eq!(after["params"], before["params"]);
    assert_eq!(after["status"], "Completed");
}

#[test]
fn bad_input_is_a_json_4xx_naming_the_culprit() {
    let s = TestServer::start();
    let id = s.new_run();
    let missing = "ffffffffffffffffffffffffffffffff";

    // Unknown ids → 404 naming the id.
    assert_error(
        &s.get(&format!("/api/v1/runs/{missing}")),
        404,
        "NOT_FOUND",
        missing,
    );
    assert_error(
        &s.get("/api/v1/experiments/987654"),
        404,
        "NOT_FOUND",
        "987654",
    );
    assert_error(
        &s.get("/api/v1/experiments/by-name/nope-x"),
        404,
        "NOT_FOUND",
        "nope-x",
    );
    assert_error(
        &s.get(&format!("/api/v1/runs/{missing}/metrics")),
        404,
        "NOT_FOUND",
        missing,
    );
    assert_error(
        &s.post(&format!("/api/v1/runs/{missing}/batch"), &json!({})),
        404,
        "NOT_FOUND",
        missing,
    );
    // A parent that does not exist is the body's mistake: a 400 that names parent_id.
    let r = s.post("/api/v1/runs", &json!({"parent_id": missing}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "invalid parent_id: no run");
    assert_error(&r, 400, "INVALID_ARGUMENT", missing);
    let r = s.post("/api/v1/runs", &json!({"experiment_id": "424242"}));
    assert_error(&r, 404, "NOT_FOUND", "424242");

    // Malformed ids → 400 naming the parameter.
    assert_error(
        &s.get("/api/v1/runs/not-a-run"),
        400,
        "INVALID_ARGUMENT",
        "run_id",
    );
    assert_error(
        &s.get("/api/v1/experiments/abc"),
        400,
        "INVALID_ARGUMENT",
        "experiment_id",
    );

    assert_error(
        &s.get("/api/v1/runs?parent_id=zz"),
        400,
        "INVALID_ARGUMENT",
        "invalid parent_id: 'zz' is not a run id",
    );
    let r = s.post("/api/v1/runs", &json!({"experiment_id": 1e20}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "expected an experiment id");

    // Misspelt fields are refused by name, never acknowledged and ignored, and nothing is stored.
    let r = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "typo", "values": [1], "step": [5]}]}),
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "unknown field `step`");
    let r = s.post(&format!("/api/v1/runs/{id}/batch"), &json!({"scalar": []}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "unknown field `scalar`");
    let r = s.post("/api/v1/runs", &json!({"experiment": "6"}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "unknown field `experiment`");
    let r = s.patch(&format!("/api/v1/runs/{id}"), &json!({"tags": {"k": "v"}}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "unknown field `tags`");
    assert_error(
        &s.post("/api/v1/runs", &json!([])),
        400,
        "INVALID_ARGUMENT",
        "found an array",
    );
    let (_, metrics) = s.get(&format!("/api/v1/runs/{id}/metrics"));
    assert!(!metrics.to_string().contains("typo"), "{metrics}");

    // More key filters than a query may hold: a 400 naming the parameter, not the store's 500.
    let many: Vec<String> = (0..101).map(|i| format!("tag=k{i}")).collect();
    assert_error(
        &s.get(&format!("/api/v1/runs?{}", many.join("&"))),
        400,
        "INVALID_ARGUMENT",
        "101 tag filters; at most 100",
    );

    // Invalid names and over-long values.
    assert_error(
        &s.post("/api/v1/experiments", &json!({"name": ""})),
        400,
        "INVALID_ARGUMENT",
        "name",
    );
    assert_error(
        &s.post("/api/v1/experiments", &json!({"name": "a\nb"})),
        400,
        "INVALID_ARGUMENT",
        "control",
    );
    let long = "x".repeat(70 * 1024);
    let r = s.patch(
        &format!("/api/v1/runs/{id}"),
        &json!({"set_tags": {"k": long}}),
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "limit");
    // Surrounding spaces are part of a name (MLflow keys may have them), kept as sent.
    let (status, r) = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": " lead ", "values": [1]}]}),
    );
    assert_eq!(status, 200, "{r}");

    // Wrong types and missing fields name the JSON path.
    let r = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "a", "values": [1, "x"]}]}),
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "scalars[0].values[1]");
    let r = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"values": [1]}]}),
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "name");
    let r = s.patch(&format!("/api/v1/runs/{id}"), &json!({"status": "Done"}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "status");
    let r = s.post("/api/v1/experiments", &json!({"name": 5}));
    assert_error(&r, 400, "INVALID_ARGUMENT", "name");

    // Non-JSON body, wrong content type.
    let r = s.send_raw(
        "POST",
        "/api/v1/experiments",
        "application/json",
        b"{name: oops",
    );
    assert_error(&r, 400, "INVALID_ARGUMENT", "JSON");
    let r = s.send_raw(
        "POST",
        "/api/v1/experiments",
        "text/plain",
        br#"{"name":"x"}"#,
    );
    assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json");

    // Oversized body → 413 JSON.
    let huge = vec![b' '; 65 * 1024 * 1024];
    let r = s.raw_request(
        "POST",
        &format!("/api/v1/runs/{id}/batch"),
        "application/json",
        huge,
    );
    assert_error(&r, 413, "TOO_LARGE", "too large");
    // The same body sent without a length (chunked) is refused once past the limit, which the answer gives.
    let answer = chunked_post(&s, &format!("/api/v1/runs/{id}/batch"), 65);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("more than 67108864 bytes came, the limit is 67108864 bytes"),
        "{answer}"
    );

    // Bad query values name the parameter.
    assert_error(
        &s.get("/api/v1/runs?limit=lots"),
        400,
        "INVALID_ARGUMENT",
        "limit",
    );
    assert_error(
        &s.get("/api/v1/runs?status=Sleeping"),
        400,
        "INVALID_ARGUMENT",
        "'Sleeping' is not a run status; expected one of",
    );
    assert_error(
        &s.get("/api/v1/runs?limit=99999999999999999999"),
        400,
        "INVALID_ARGUMENT",
        "too large; the largest accepted is 4294967295",
    );
    assert_error(
        &s.get("/api/v1/runs?include_deleted=maybe"),
        400,
        "INVALID_ARGUMENT",
        "include_deleted",
    );
    assert_error(
        &s.get("/api/v1/runs?experiment_id=-3"),
        400,
        "INVALID_ARGUMENT",
        "experiment_id",
    );

    // A path that is not UTF-8 once decoded → 400 JSON, not axum's plain text.
    let (status, body) = s.get("/api/v1/runs/%FF%FE");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    // Unknown route → 404 JSON; wrong method → 405 JSON.
    assert_error(
        &s.get("/api/v1/nothing/here"),
        404,
        "NOT_FOUND",
        "/api/v1/nothing/here",
    );
    assert_error(
        &s.delete("/api/v1/experiments"),
        405,
        "METHOD_NOT_ALLOWED",
        "DELETE",
    );

    // None of that created anything but the series with spaces around its name.
    let (_, runs) = s.get("/api/v1/runs");
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
    let (_, exps) = s.get("/api/v1/experiments");
    assert_eq!(exps["items"].as_array().unwrap().len(), 1, "{exps}");
    let (_, metrics) = s.get(&format!("/api/v1/runs/{id}/metrics"));
    let names: Vec<_> = metrics["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["name"])
        .collect();
    assert_eq!(names, [" lead "], "{metrics}");
}

/// Posts `mib` MiB of spaces as a chunked JSON body (no Content-Length) and returns the start of the answer.
fn chunked_post(s: &TestServer, path: &str, mib: usize) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    c.set_write_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let chunk = [
        format!("{:x}\r\n", 1 << 20).into_bytes(),
        vec![b' '; 1 << 20],
        b"\r\n".to_vec(),
    ]
    .concat();
    for _ in 0..mib {
        // The server answers once the limit is passed and may close before the rest is sent.
        if c.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = c.write_all(b"0\r\n\r\n");
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = c.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
