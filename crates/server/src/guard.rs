//! What keeps web pages from using a server that has no login: the Host header is checked (a page of another
//! site cannot reach this server by pointing its own name at 127.0.0.1, "DNS rebinding"), writes from a page of
//! another origin are refused (cross-site request forgery), and every answer tells browsers not to guess types or
//! frame the portal. MLflow's server (3.x) does the same by default.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;
use std::sync::Arc;

/// Which Host headers and which origins' pages the server accepts beyond its defaults.
#[derive(Clone, Debug, Default)]
pub struct AccessPolicy {
    /// Host header patterns accepted beside loopback and private addresses, `localhost` and the address the
    /// server listens on: a name (`gpu-box`, any port), `name:port`, `*` wildcards (`*.lab.example`), or `*`
    /// alone for any host.
    pub allowed_hosts: Vec<String>,
    /// Origins whose pages may write (`https://dash.example`, `*` wildcards, `*` alone for any). The server's own
    /// origin and loopback origins always may.
    pub allowed_origins: Vec<String>,
}

impl AccessPolicy {
    /// The policy of a server listening on `bind`: a specific name or address there is accepted as a Host.
    pub fn listening_on(mut self, bind: &str) -> Self {
        let unspecified = bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if !bind.is_empty() && !unspecified {
            self.allowed_hosts
                .push(bind.trim_matches(['[', ']']).to_string());
        }
        self
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        is_local_or_private(name)
            || self
                .allowed_hosts
                .iter()
                .any(|p| glob(p, host) || glob(p, name))
    }

    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let Some(authority) = origin
            .split_once("://")
            .map(|(_, a)| a.trim_end_matches('/'))
        else {
            return false; // "null" (a sandboxed page, a file) or malformed
        };
        authority.eq_ignore_ascii_case(host)
            || is_loopback(host_name(authority))
            || self.allowed_origins.iter().any(|p| glob(p, origin))
    }
}

/// The middleware: refuses what the policy does not accept, and adds the browser headers to every answer.
pub async fn guard(policy: Arc<AccessPolicy>, req: Request, next: Next) -> Response {
    if let Some(refused) = refusal_of(&policy, &req) {
        return refused;
    }
    let mut resp = next.run(req).await;
    add_browser_headers(resp.headers_mut());
    resp
}

/// The answer to a request the policy does not accept, if it is one.
fn refusal_of(policy: &AccessPolicy, req: &Request) -> Option<Response> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !exempt(req.uri().path()) && !policy.host_allowed(host) {
        tracing::warn!(
            host,
            "refused a request with a Host header that is not allowed"
        );
        return Some(refusal(format!(
            "Invalid Host header '{host}': this server answers requests for loopback and private addresses \
             and the address it listens on, which protects it from DNS rebinding. Start it with \
             --allowed-hosts {} (or '*') to accept that name.",
            host_name(host)
        )));
    }
    let origin = cross_site_write(req, policy, host)?;
    tracing::warn!(origin, "refused a write from a page of another origin");
    Some(refusal(format!(
        "Cross-origin request blocked: a page of '{origin}' may not change data on this server. Start it \
         with --allowed-origins {origin} to allow that site's pages."
    )))
}

/// Health and version answer any Host: probes of orchestrators name the server by whatever they reach.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/version")
}

/// The origin of a writing request from a page the policy does not trust, if it is one. Requests without an
/// `Origin` header come from programs (the SDK, the mlflow client, curl), which pages cannot forge.
fn cross_site_write<'r>(req: &'r Request, policy: &AccessPolicy, host: &str) -> Option<&'r str> {
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let origin = req
        .headers()
        .get(header::ORIGIN)?
        .to_str()
        .unwrap_or("null");
    (writes && !policy.origin_allowed(origin, host)).then_some(origin)
}

fn refusal(message: String) -> Response {
    let mut resp = Response::new(Body::from(message));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    add_browser_headers(resp.headers_mut());
    resp
}

/// No type sniffing (an uploaded file is never run as a script or page it was not served as), and the portal
/// is framed only by its own pages (no clickjacking).
fn add_browser_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
}

/// The name in a Host header or an origin's authority, without its port and IPv6 brackets, lower-cased
/// by comparison where it matters (names are compared case-insensitively by [`glob`]).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `localhost`, a loopback, unspecified or private IPv4 address (10/8, 172.16/12, 192.168/16), or an IPv6
/// loopback, unspecified or unique-local (fc00::/7) one.
fn is_local_or_private(name: &str) -> bool {
    is_loopback(name)
        || match name.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip.is_private() || ip.is_unspecified(),
            Ok(IpAddr::V6(ip)) => ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00,
            Err(_) => false,
        }
}

/// `localhost` or a loopback address: this machine.
fn is_loopback(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `text` matches `pattern`, whose `*` stands for any run of characters; ASCII case is ignored.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = p.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = t.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty(); // no `*`: the whole text
    };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_and_listening_hosts_pass_and_others_do_not() {
        let policy = AccessPolicy::default().listening_on("gpu-box");
        for ok in [
            "127.0.0.1:5000",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "10.2.3.4:5000",
            "172.20.0.1",
            "192.168.1.9:80",
            "[fd12::1]:5000",
            "gpu-box:5000",
        ] {
            assert!(policy.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example:5000",
            "8.8.8.8:5000",
            "172.32.0.1",
            "",
            "[2001:db8::1]:5000",
        ] {
            assert!(!policy.host_allowed(refused), "{refused}");
        }
        let open = AccessPolicy {
            allowed_hosts: vec!["*.lab.example".into(), "exact.example:8080".into()],
            ..Default::default()
        };
        assert!(open.host_allowed("a.lab.example:5000") && open.host_allowed("exact.example:8080"));
        assert!(!open.host_allowed("exact.example:9090") && !open.host_allowed("lab.example"));
        assert!(!AccessPolicy::default()
            .listening_on("0.0.0.0")
            .host_allowed("evil.example"));
    }

    #[test]
    fn only_trusted_origins_write() {
        let policy = AccessPolicy {
            allowed_origins: vec!["https://dash.example".into()],
            ..Default::default()
        };
        let host = "10.0.0.5:5000";
        assert!(
            policy.origin_allowed("http://10.0.0.5:5000", host),
            "the portal's own origin"
        );
        assert!(policy.origin_allowed("http://localhost:3000", host));
        assert!(policy.origin_allowed("http://127.0.0.1:8888", host));
        assert!(policy.origin_allowed("https://dash.example", host));
        assert!(!policy.origin_allowed("https://evil.example", host));
        assert!(!policy.origin_allowed("null", host));
        assert!(
            !policy.origin_allowed("http://10.0.0.5:6000", host),
            "another port is another origin"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything") && glob("a*c", "abbbc") && glob("*.x", "a.b.x"));
        assert!(!glob("a*c", "abd") && !glob("abc", "abcd") && !glob("*.x", "x"));
        assert!(glob("Host", "host"));
    }
}
