//! The web portal served by the real binary: `/` and deep links give index.html, hashed assets carry their
//! type and immutable caching (gzip when accepted), and API namespaces keep their JSON 404s.

mod common;

use common::TestServer;

fn header<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The first `/assets/…js` referenced by the HTML.
fn script_src(html: &str) -> String {
    let at = html
        .find("/assets/")
        .expect("index.html references /assets/");
    let rest = &html[at..];
    let end = rest.find('"').expect("closing quote");
    let src = rest[..end].to_string();
    assert!(src.ends_with(".js") || src.ends_with(".css"), "{src}");
    src
}

#[test]
fn root_and_deep_links_serve_the_app() {
    let s = TestServer::start();
    let (status, root, h) = s.get_bytes("/");
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("text/html"));
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let html = String::from_utf8(root.clone()).unwrap();
    assert!(html.contains("<div id=\"app\"></div>"), "{html}");
    for deep in [
        "/runs/0123456789abcdef0123456789abcdef?tab=metrics",
        "/experiments/0",
        "/compare?runs=a,b",
    ] {
        let (status, body, h) = s.get_bytes(deep);
        assert_eq!(status, 200, "{deep}");
        assert!(
            header(&h, "content-type").starts_with("text/html"),
            "{deep}"
        );
        assert_eq!(body, root, "{deep} serves the same index.html");
    }
}

#[test]
fn hashed_assets_have_type_caching_and_gzip() {
    let s = TestServer::start();
    let (_, root, _) = s.get_bytes("/");
    let html = String::from_utf8(root).unwrap();
    let js = html
        .split("src=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap_or(""))
        .find(|p| p.starts_with("/assets/") && p.ends_with(".js"))
        .map(str::to_string)
        .unwrap_or_else(|| script_src(&html));
    let (status, body, h) = s.get_bytes(&js);
    assert_eq!(status, 200, "{js}");
    assert!(
        header(&h, "content-type").starts_with("text/javascript"),
        "{js}"
    );
    assert!(header(&h, "cache-control").contains("immutable"));
    assert!(
        header(&h, "content-encoding").is_empty(),
        "no gzip unless accepted"
    );
    assert!(body.len() > 1000, "the bundle is not empty");

    let mut resp = common::agent()
        .get(&s.url(&js))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("request");
    assert_eq!(header(resp.headers(), "content-encoding"), "gzip");
    let gz = resp.body_mut().read_to_vec().expect("body");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(gz.len() < body.len());

    let (status, _, _) = s.get_bytes("/assets/no-such-file-abc123.js");
    assert_eq!(status, 404, "a missing hashed asset is not index.html");
}

#[test]
fn api_namespaces_still_answer_json_404() {
    let s = TestServer::start();
    let (status, body) = s.get("/api/v1/no/such/route");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let (status, body) = s.get("/api/v1/runs/0123456789abcdef0123456789abcdef");
    assert_eq!(status, 404);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not found"));
    let (status, body) = s.get("/api/2.0/mlflow/nope");
    assert_eq!(status, 404);
    assert_eq!(body["error_code"], "ENDPOINT_NOT_FOUND");
    let (status, body) = s.get("/health");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = s.post("/runs/abc", &serde_json::json!({}));
    assert!(status == 404 || status == 405, "{status}");
    assert!(
        body.is_object(),
        "a non-GET outside the API is not the portal"
    );
}

/// `GET /api/v1/runs/table`: params and latest scalars per run, MLflow filter grammar, order_by, and a bad
/// filter answered 400 with the offending token named.
#[test]
fn runs_table_filters_sorts_and_rejects_bad_filters() {
    use serde_json::json;
    let s = TestServer::start();
    let (status, exp) = s.post("/api/v1/experiments", &json!({"name": "table"}));
    assert_eq!(status, 201, "{exp}");
    let exp = exp["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (i, lr) in ["0.1", "0.01", "0.001"].iter().enumerate() {
        let (status, run) = s.post(
            "/api/v1/runs",
            &json!({"experiment_id": exp, "display_name": format!("r{i}"), "params": {"lr": lr}, "user": "ada"}),
        );
        assert_eq!(status, 201, "{run}");
        let id = run["id"].as_str().unwrap().to_string();
        let (status, ack) = s.post(
            &format!("/api/v1/runs/{id}/batch"),
            &json!({"scalars": [{"name": "loss", "values": [9.0, 1.0 + i as f64]}],
                    "metrics": [{"kind": "text", "name": "note", "values": ["hi"]}]}),
        );
        assert_eq!(status, 200, "{ack}");
        ids.push(id);
    }
    let (status, child) = s.post(
        "/api/v1/runs",
        &json!({"experiment_id": exp, "display_name": "child", "parent_id": ids[0]}),
    );
    assert_eq!(status, 201, "{child}");

    let (status, t) = s.get(&format!("/api/v1/runs/table?experiment_id={exp}"));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["total"], 4);
    assert_eq!(t["param_keys"], json!(["lr"]));
    assert_eq!(
        t["metric_keys"],
        json!(["loss"]),
        "only scalars are columns"
    );
    let r1 = t["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r1")
        .expect("r1");
    assert_eq!(r1["metrics"]["loss"], 2.0, "the latest value");
    assert_eq!(r1["params"]["lr"], "0.01");
    assert_eq!(r1["status"], "Running");
    let kid = t["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "child")
        .unwrap();
    assert_eq!(kid["parent_id"], ids[0].as_str());

    let q = "filter=metrics.loss%20%3E%201.5&order_by=metrics.loss%20DESC";
    let (status, t) = s.get(&format!("/api/v1/runs/table?experiment_id={exp}&{q}"));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["total"], 2);
    let names: Vec<&str> = t["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r2", "r1"]);
    let (_, t) = s.get(&format!(
        "/api/v1/runs/table?experiment_id={exp}&filter=params.lr%20%3D%20%270.1%27"
    ));
    assert_eq!(t["total"], 1);
    assert_eq!(t["runs"][0]["name"], "r0");

    let (status, e) = s.get(&format!(
        "/api/v1/runs/table?experiment_id={exp}&filter=metrics.loss%20%3E%3E%201"
    ));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["code"], "INVALID_ARGUMENT");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("filter") && msg.contains("character"), "{msg}");
    let (status, e) = s.get(&format!(
        "/api/v1/runs/table?experiment_id={exp}&order_by=bogus.x"
    ));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("order_by"));
    let (status, _) = s.get("/api/v1/runs/table");
    assert_eq!(status, 400, "experiment_id is required");
}

/// The runs table takes the statuses the portal shows (`Completed`, `Failed`, any case) in a status condition
/// (`=`, `!=`) as well as MLflow's names; MLflow's own runs/search keeps MLflow's names only.
#[test]
fn runs_table_filters_on_flightlog_status_names() {
    use serde_json::json;
    let s = TestServer::start();
    let exp = s.new_experiment("statuses");
    for (name, status) in [
        ("done", "Completed"),
        ("broken", "Failed"),
        ("busy", "Running"),
    ] {
        let (code, run) = s.post(
            "/api/v1/runs",
            &json!({"experiment_id": exp, "display_name": name}),
        );
        assert_eq!(code, 201, "{run}");
        let id = run["id"].as_str().unwrap().to_string();
        if status != "Running" {
            let (code, r) = s.patch(&format!("/api/v1/runs/{id}"), &json!({"status": status}));
            assert_eq!((code, r["status"].as_str()), (200, Some(status)), "{r}");
        }
    }
    let names_for = |filter: &str| -> Vec<String> {
        let (code, t) = s.get(&format!(
            "/api/v1/runs/table?experiment_id={exp}&filter={}",
            common::enc(filter)
        ));
        assert_eq!(code, 200, "{filter}: {t}");
        let mut names: Vec<String> = t["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(t["total"], names.len(), "{filter}");
        names
    };
    assert_eq!(names_for("attributes.status = 'Completed'"), ["done"]);
    assert_eq!(names_for("attributes.status = 'FINISHED'"), ["done"]);
    assert_eq!(names_for("status = 'failed'"), ["broken"]);
    assert_eq!(names_for("status != 'Completed'"), ["broken", "busy"]);
    assert_eq!(names_for("status = 'Running'"), ["busy"]);
    assert_eq!(names_for("status = 'Canceled'"), Vec::<String>::new());

    let search = |filter: &str| -> usize {
        let (code, body) = s.post(
            "/api/2.0/mlflow/runs/search",
            &json!({"experiment_ids": [exp], "filter": filter}),
        );
        assert_eq!(code, 200, "{filter}: {body}");
        body["runs"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(search("attributes.status = 'FINISHED'"), 1);
    assert_eq!(
        search("attributes.status = 'Completed'"),
        0,
        "MLflow's runs/search compares MLflow's names only"
    );
}

/// Chart reads are cached by the series' point count: a repeated downsampled read answers the same, and points
/// appended afterwards show in the next read.
#[test]
fn downsampled_reads_see_appended_points() {
    use serde_json::json;
    let s = TestServer::start();
    let (_, exp) = s.post("/api/v1/experiments", &json!({"name": "ds"}));
    let (_, run) = s.post("/api/v1/runs", &json!({"experiment_id": exp["id"]}));
    let id = run["id"].as_str().unwrap().to_string();
    let values: Vec<f64> = (0..1000).map(|i| (i % 7) as f64).collect();
    let (status, _) = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "loss", "values": values}]}),
    );
    assert_eq!(status, 200);
    let path = format!("/api/v1/runs/{id}/metrics/loss?buckets=10");
    let (_, first) = s.get(&path);
    let (_, again) = s.get(&path);
    assert_eq!(first["steps"], again["steps"]);
    let n = first["values"].as_array().unwrap().len();
    assert!(n <= 20 && n > 0, "{n} points for 10 buckets");
    let (status, _) = s.post(
        &format!("/api/v1/runs/{id}/batch"),
        &json!({"scalars": [{"name": "loss", "values": [99.0]}]}),
    );
    assert_eq!(status, 200);
    let (_, after) = s.get(&path);
    assert_eq!(after["info"]["count"], 1001);
    let max = after["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .fold(f64::MIN, f64::max);
    assert_eq!(max, 99.0, "the appended spike is kept by the next read");
}
