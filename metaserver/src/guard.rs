//! Who may reach this server and do what (protocol.md, sessions.md "Limits that hold whoever
//! connects"): the Host rule against DNS rebinding, the Origin rule for browsers, the operator
//! rule, and the CORS answer for pages of allowed origins.
//!
//! | request | rule |
//! |---|---|
//! | any | the `Host` header names this server — otherwise 421 ([`HostRule`]) |
//! | a WebSocket, a state-changing `POST` | an allowed `Origin`, or none ([`origin_allowed`]) — otherwise 403 |
//! | operator endpoints, run control | loopback (unless `--loopback-is-operator false`) or the admin token ([`operator_allowed`]) |

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The names this server answers to. A page that rebinds its own name (`evil.example`) to this
/// machine's address sends `Host: evil.example:PORT`; a request naming anything else is refused
/// with 421 (Misdirected Request), so such a page never reads an answer or drains the server.
#[derive(Debug, Clone, Default)]
pub struct HostRule {
    /// `--public-host` names, the hosts of `--allowed-origins`, this machine's host name.
    names: Vec<String>,
}

impl HostRule {
    pub fn new(
        public_hosts: &[String],
        allowed_origins: &[String],
        hostname: Option<&str>,
    ) -> Self {
        let mut names: Vec<String> = public_hosts
            .iter()
            .map(|h| host_name(h.trim()).to_ascii_lowercase())
            .collect();
        names.extend(
            allowed_origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| {
                    o.split_once("://")
                        .map(|(_, rest)| host_name(rest).to_ascii_lowercase())
                }),
        );
        if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
            names.push(h.to_ascii_lowercase());
            names.push(format!("{}.local", h.to_ascii_lowercase()));
        }
        names.retain(|n| !n.is_empty());
        HostRule { names }
    }

    /// Allowed: no `Host` (not a browser: browsers always send one), an IP address (a rebinding
    /// page has a name — this server may be reached on any of its addresses), a loopback name,
    /// or one of the names above.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        let name = host_name(host);
        name.parse::<std::net::IpAddr>().is_ok()
            || is_loopback_name(name)
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// The Host rule as middleware: 421 before any handler sees a request for another name.
pub async fn check_host(State(rule): State<Arc<HostRule>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if rule.allows(host) {
        return next.run(req).await;
    }
    let body = "misdirected request: this server does not answer to that host name. An operator \
                can add names with --public-host.";
    (StatusCode::MISDIRECTED_REQUEST, body).into_response()
}

/// The operator rule with this server's settings (`--admin-token`, `--loopback-is-operator`).
#[derive(Debug, Clone)]
pub struct Operators {
    admin_token: Option<String>,
    loopback_is_operator: bool,
}

impl Operators {
    pub fn new(admin_token: Option<String>, loopback_is_operator: bool) -> Operators {
        Operators {
            admin_token: admin_token.filter(|t| !t.is_empty()),
            loopback_is_operator,
        }
    }

    /// Is a request from `peer` with headers `h` an operator's ([`operator_allowed`])?
    pub fn allow(&self, peer: SocketAddr, h: &HeaderMap) -> bool {
        operator_allowed(
            self.admin_token.as_deref(),
            self.loopback_is_operator,
            peer,
            h,
        )
    }

    /// Does `given` (from a WebSocket message, where a browser cannot set headers) match the
    /// admin token? Constant time; false when no token is configured.
    pub fn token_matches(&self, given: &str) -> bool {
        self.admin_token
            .as_deref()
            .is_some_and(|t| ipc_proto::handshake::secret_eq(given, t))
    }
}

/// The operator rule: a loopback peer (IPv4, IPv6, or IPv4-mapped IPv6), or the admin token as
/// `Authorization: Bearer TOKEN` (compared in constant time). No token configured: loopback only.
pub fn operator_allowed(
    admin_token: Option<&str>,
    loopback_is_operator: bool,
    peer: SocketAddr,
    h: &HeaderMap,
) -> bool {
    if loopback_is_operator && peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let Some(token) = admin_token.filter(|t| !t.is_empty()) else {
        return false;
    };
    let given = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    ipc_proto::handshake::secret_eq(given, token)
}

/// The Origin rule of protocol.md: no `Origin` (not a browser) is allowed; an origin on the same
/// host name as the request's `Host`, on any port or scheme, is allowed (a frontend dev server on
/// `:5173` of this machine); so is anything in `--allowed-origins`, which adds to that rule (`*`
/// allows every origin). Loopback names count as one host: a page from `http://localhost:5173`
/// may talk to `ws://127.0.0.1:8765` — both are this machine.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| host_name(rest));
    match (origin_host, host.map(host_name)) {
        (Some(o), Some(h)) if !o.is_empty() => {
            o.eq_ignore_ascii_case(h) || (is_loopback_name(o) && is_loopback_name(h))
        }
        _ => false,
    }
}

/// The host name of an authority (`host`, `host:port`, `[v6]:port`), without the port.
fn host_name(authority: &str) -> &str {
    let authority = authority.split('/').next().unwrap_or("");
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `Origin` and `Host` of a request.
pub fn origin_and_host(h: &HeaderMap) -> (Option<&str>, Option<&str>) {
    let get = |k| h.get(k).and_then(|v: &HeaderValue| v.to_str().ok());
    (get(header::ORIGIN), get(header::HOST))
}

/// CORS for the read-only endpoints: a page of an allowed origin (a frontend dev server on
/// `:5173` of this host, say) may read the answer. Nothing for requests without an `Origin` or
/// from other origins (the browser then refuses the page the answer).
pub fn cors(allowed: &[String], h: &HeaderMap, mut r: Response) -> Response {
    let (origin, host) = origin_and_host(h);
    if let Some(o) = origin.filter(|o| origin_allowed(allowed, Some(o), host)) {
        if let Ok(v) = HeaderValue::from_str(o) {
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    r
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rule() {
        let rule = HostRule::new(
            &["class.example".to_owned()],
            &["http://dev.example:5173".to_owned(), "*".to_owned()],
            Some("teacher-laptop"),
        );
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST",
            "app.localhost:8765",
            "[::1]:8765",
            "192.168.1.10:8765",
            "class.example:8765",
            "Class.Example",
            "dev.example:8765",
            "teacher-laptop:8765",
            "teacher-laptop.local:8765",
        ] {
            assert!(rule.allows(Some(ok)), "{ok}");
        }
        assert!(rule.allows(None), "not a browser");
        for bad in [
            "evil.example:8765",
            "localhost.evil.example",
            "class.example.evil.example",
            "",
            "\u{fffd}",
        ] {
            assert!(!rule.allows(Some(bad)), "{bad}");
        }
        assert!(!HostRule::default().allows(Some("class.example")));
    }

    #[test]
    fn origin_rule() {
        let none: Vec<String> = vec![];
        let ok = |allowed: &[String], origin: &str, host: &str| {
            origin_allowed(allowed, Some(origin), Some(host))
        };
        assert!(
            origin_allowed(&none, None, Some("a:1")),
            "no Origin: not a browser"
        );
        assert!(
            ok(&none, "http://127.0.0.1:8765", "127.0.0.1:8765"),
            "same origin"
        );
        assert!(
            ok(&none, "http://127.0.0.1:5173", "127.0.0.1:8765"),
            "same host, other port"
        );
        assert!(
            ok(&none, "https://class.example", "class.example:8765"),
            "other scheme"
        );
        assert!(
            ok(&none, "http://localhost:5173", "127.0.0.1:8765"),
            "loopback names are one host"
        );
        assert!(ok(&none, "http://127.0.0.1:5173", "localhost:8765"));
        assert!(ok(&none, "http://[::1]:5173", "localhost:8765"));
        assert!(!ok(&none, "http://evil.example", "127.0.0.1:8765"));
        assert!(!ok(
            &none,
            "http://localhost.evil.example",
            "127.0.0.1:8765"
        ));
        assert!(!ok(
            &none,
            "http://class.example:5173",
            "other.example:8765"
        ));
        assert!(
            !ok(&none, "null", "127.0.0.1:8765"),
            "opaque origins are not a host"
        );
        assert!(
            !ok(&none, "http://127.0.0.1:5173", ""),
            "no Host: nothing to match"
        );
        let flag = vec!["http://class.example:5173".to_owned()];
        assert!(
            ok(&flag, "http://class.example:5173", "10.0.0.5:8765"),
            "the flag adds"
        );
        assert!(
            ok(&flag, "http://10.0.0.5:5173", "10.0.0.5:8765"),
            "and keeps the host rule"
        );
        assert!(!ok(&flag, "http://class.example:5174", "10.0.0.5:8765"));
        assert!(ok(
            &["*".to_owned()],
            "http://anything.example",
            "10.0.0.5:8765"
        ));
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn operator_rule() {
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let remote6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        for local in [
            "127.0.0.1:1",
            "127.0.0.2:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let peer: SocketAddr = local.parse().unwrap();
            assert!(
                operator_allowed(None, true, peer, &headers(None)),
                "{local}"
            );
            // Behind a reverse proxy on this host, loopback proves nothing; the token still does.
            assert!(
                !operator_allowed(None, false, peer, &headers(None)),
                "{local}"
            );
            assert!(!operator_allowed(
                Some("sekret"),
                false,
                peer,
                &headers(None)
            ));
            assert!(operator_allowed(
                Some("sekret"),
                false,
                peer,
                &headers(Some("Bearer sekret"))
            ));
        }
        for peer in [remote, remote6] {
            assert!(!operator_allowed(None, true, peer, &headers(None)));
            assert!(
                !operator_allowed(None, true, peer, &headers(Some("Bearer x"))),
                "no token configured"
            );
            assert!(!operator_allowed(
                Some("sekret"),
                true,
                peer,
                &headers(None)
            ));
            assert!(!operator_allowed(
                Some("sekret"),
                true,
                peer,
                &headers(Some("Bearer wrong!"))
            ));
            assert!(!operator_allowed(
                Some("sekret"),
                true,
                peer,
                &headers(Some("Bearer sekre"))
            ));
            assert!(
                !operator_allowed(Some("sekret"), true, peer, &headers(Some("sekret"))),
                "scheme required"
            );
            assert!(
                !operator_allowed(Some(""), true, peer, &headers(Some("Bearer "))),
                "empty token never passes"
            );
            assert!(operator_allowed(
                Some("sekret"),
                true,
                peer,
                &headers(Some("Bearer sekret"))
            ));
        }
    }
}
