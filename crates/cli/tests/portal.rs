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
