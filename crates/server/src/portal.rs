//! The web portal (docs/portal.md): the built `web/dist` files embedded in the binary, served at `/` with
//! SPA fallback so deep links load `index.html`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// (URL path, bytes, gzip-compressed twin if the build made one).
type Asset = (&'static str, &'static [u8], Option<&'static [u8]>);

include!(concat!(env!("OUT_DIR"), "/portal_assets.rs"));

/// Paths that belong to the APIs: an unknown one there is a JSON 404, never the portal.
const API_PREFIXES: &[&str] = &["/api/", "/ajax-api/"];
const API_EXACT: &[&str] = &["/api", "/ajax-api", "/health", "/version"];

/// Whether `path` is the portal's to answer (a GET/HEAD outside the API namespaces).
pub fn is_portal_request(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && !API_EXACT.contains(&path)
        && !API_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Serves an embedded file, or `index.html` for any other path (client-side routes). Files under
/// `/assets/` carry a content hash in their names, so they are cached forever; `index.html` is revalidated.
pub fn serve(req: &Request) -> Response {
    let path = req.uri().path();
    let asset = find(path).filter(|_| path != "/index.html");
    let (url, bytes, gz) = match asset {
        Some(a) => a,
        // A missing hashed asset is a real 404 (an old page asking for a replaced bundle), not HTML.
        None if path.starts_with("/assets/") => {
            return (StatusCode::NOT_FOUND, "no such portal asset").into_response()
        }
        None => match find("/index.html") {
            Some(a) => a,
            None => return (StatusCode::NOT_FOUND, "portal not built").into_response(),
        },
    };
    let use_gz = gz.filter(|_| accepts_gzip(req.headers()));
    let body = use_gz.unwrap_or(bytes);
    let mut resp = Response::new(if req.method() == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(url)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if use_gz.is_some() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let cache = if url.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn find(path: &str) -> Option<Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().copied().find(|(url, _, _)| *url == path)
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_not_the_portal() {
        assert!(is_portal_request(&Method::GET, "/"));
        assert!(is_portal_request(&Method::GET, "/runs/abc"));
        assert!(!is_portal_request(&Method::GET, "/api/v1/nope"));
        assert!(!is_portal_request(&Method::GET, "/ajax-api/2.0/mlflow/x"));
        assert!(!is_portal_request(&Method::GET, "/health"));
        assert!(!is_portal_request(&Method::POST, "/runs/abc"));
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip, deflate"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn index_is_embedded() {
        let (_, html, _) = find("/").expect("index.html embedded");
        assert!(String::from_utf8_lossy(html).contains("<div id=\"app\">"));
        assert_eq!(
            content_type("/assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
