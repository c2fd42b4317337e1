//! Server-side HTTP Digest as Axis devices do it: MD5, `qop="auth"` (RFC 7616) and the
//! RFC 2069 form without `qop`, realm `AXIS_<serial>`.

use md5::{Digest as _, Md5};

/// Lower-case hex MD5 of a string: every Digest hash is one of these.
pub(crate) fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The parameters of an `Authorization: Digest ...` header (names are case-insensitive).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct DigestParams {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Splits `k=v, k="v", ...` into pairs (keys lower-cased, quotes and `\` escapes removed).
/// Tolerates irregular spacing, empty items and bare tokens (which are skipped).
pub(crate) fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            it.next();
        }
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek() != Some(&'=') {
            // A bare token: skip to the next comma.
            while it.peek().is_some_and(|c| *c != ',') {
                it.next();
            }
            continue;
        }
        it.next(); // '='
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            while let Some(c) = it.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(n) = it.next() {
                            value.push(n);
                        }
                    }
                    c => value.push(c),
                }
            }
            // Anything between the closing quote and the next comma is junk.
            while it.peek().is_some_and(|c| *c != ',') {
                it.next();
            }
        } else {
            while let Some(&c) = it.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                it.next();
            }
            value.truncate(value.trim_end().len());
        }
        if !key.is_empty() {
            out.push((key.to_ascii_lowercase(), value));
        }
    }
    out
}

/// Parses an `Authorization` header value; `None` unless it is a Digest header with at least
/// `username`, `nonce`, `uri` and `response`.
pub(crate) fn parse_authorization(header: &str) -> Option<DigestParams> {
    let header = header.trim_start();
    let (scheme, rest) = header.split_once(|c: char| c.is_whitespace())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut p = DigestParams::default();
    let (mut user, mut nonce, mut uri, mut resp) = (false, false, false, false);
    for (k, v) in parse_params(rest) {
        match k.as_str() {
            "username" => (p.username, user) = (v, true),
            "realm" => p.realm = v,
            "nonce" => (p.nonce, nonce) = (v, true),
            "uri" => (p.uri, uri) = (v, true),
            "response" => (p.response, resp) = (v, true),
            "algorithm" => p.algorithm = Some(v),
            "qop" => p.qop = Some(v),
            "nc" => p.nc = Some(v),
            "cnonce" => p.cnonce = Some(v),
            _ => {}
        }
    }
    (user && nonce && uri && resp).then_some(p)
}

/// The `qop` part of a Digest computation: nonce count, client nonce and qop value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Qop<'a> {
    pub nc: &'a str,
    pub cnonce: &'a str,
    pub qop: &'a str,
}

/// The expected `response`: MD5(HA1:nonce:nc:cnonce:qop:HA2), or MD5(HA1:nonce:HA2) without qop.
pub(crate) fn compute_response(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<Qop<'_>>,
) -> String {
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some(q) => md5_hex(&format!(
            "{ha1}:{nonce}:{}:{}:{}:{ha2}",
            q.nc, q.cnonce, q.qop
        )),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Why a Digest header does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Wrong user, realm, uri, algorithm, qop or response.
    Invalid,
    /// Everything right but the nonce is not one we issued (or was forgotten): `stale=true`.
    StaleNonce,
}

/// Checks a parsed header against the expected account and request.
/// `nonce_known` tells whether the server issued the nonce.
pub(crate) fn verify(
    p: &DigestParams,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    request_target: &str,
    nonce_known: bool,
) -> Result<(), Rejection> {
    if p.username != username || p.realm != realm {
        return Err(Rejection::Invalid);
    }
    if p.algorithm
        .as_deref()
        .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
    {
        return Err(Rejection::Invalid);
    }
    if !uri_matches(&p.uri, request_target) {
        return Err(Rejection::Invalid);
    }
    let qop = match p.qop.as_deref() {
        None => None,
        Some(q) if q.eq_ignore_ascii_case("auth") => match (&p.nc, &p.cnonce) {
            (Some(nc), Some(cnonce)) => Some(Qop { nc, cnonce, qop: q }),
            _ => return Err(Rejection::Invalid),
        },
        Some(_) => return Err(Rejection::Invalid),
    };
    let want = compute_response(username, realm, password, method, &p.uri, &p.nonce, qop);
    if !want.eq_ignore_ascii_case(p.response.trim()) {
        return Err(Rejection::Invalid);
    }
    if !nonce_known {
        return Err(Rejection::StaleNonce);
    }
    Ok(())
}

/// The Digest `uri` must name the request target (path and query); an absolute URL whose
/// path and query are the target is accepted too.
fn uri_matches(digest_uri: &str, target: &str) -> bool {
    if digest_uri == target {
        return true;
    }
    match url::Url::parse(digest_uri) {
        Ok(u) if u.has_host() => {
            let pq = match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            };
            pq == target
        }
        _ => false,
    }
}

/// A fresh random nonce in the style of Axis devices (base64 time-ish part, `=`, hex).
pub(crate) fn new_nonce() -> String {
    use base64::Engine as _;
    let a: [u8; 8] = rand::random();
    let b: [u8; 20] = rand::random();
    format!(
        "{}{}",
        base64::engine::general_purpose::STANDARD.encode(a),
        hex::encode(b)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "Xk2mB9fTBQA=3c61a09e5d7f4b28e0c9a1d6f2b84e57c3a9d0e1";
    const HEADER: &str = r#"Digest username="bridge", realm="AXIS_B8A44F3E9D21", nonce="Xk2mB9fTBQA=3c61a09e5d7f4b28e0c9a1d6f2b84e57c3a9d0e1", uri="/vapix/ws-data-stream?sources=events", algorithm=MD5, qop=auth, nc=00000001, cnonce="6d1f0a93c4b2e857", response="49cf2ee5a6eb5bcf2a484f689b3f5fb7""#;

    #[test]
    fn worked_example_from_the_fixture_readme() {
        assert_eq!(
            md5_hex("bridge:AXIS_B8A44F3E9D21:fixture-pass"),
            "18064eaa1a45ace1f232d1d70ec703ed"
        );
        assert_eq!(
            md5_hex("GET:/vapix/ws-data-stream?sources=events"),
            "0d7053bda94dc9eab8096e915366870b"
        );
        let r = compute_response(
            "bridge",
            "AXIS_B8A44F3E9D21",
            "fixture-pass",
            "GET",
            "/vapix/ws-data-stream?sources=events",
            NONCE,
            Some(Qop {
                nc: "00000001",
                cnonce: "6d1f0a93c4b2e857",
                qop: "auth",
            }),
        );
        assert_eq!(r, "49cf2ee5a6eb5bcf2a484f689b3f5fb7");
        let p = parse_authorization(HEADER).unwrap();
        assert_eq!(p.nonce, NONCE);
        assert_eq!(p.cnonce.as_deref(), Some("6d1f0a93c4b2e857"));
        let ok = |known| {
            verify(
                &p,
                "bridge",
                "AXIS_B8A44F3E9D21",
                "fixture-pass",
                "GET",
                "/vapix/ws-data-stream?sources=events",
                known,
            )
        };
        assert_eq!(ok(true), Ok(()));
        assert_eq!(ok(false), Err(Rejection::StaleNonce));
        let wrong = verify(
            &p,
            "bridge",
            "AXIS_B8A44F3E9D21",
            "wrong",
            "GET",
            "/vapix/ws-data-stream?sources=events",
            true,
        );
        assert_eq!(wrong, Err(Rejection::Invalid));
        let other_uri = verify(
            &p,
            "bridge",
            "AXIS_B8A44F3E9D21",
            "fixture-pass",
            "GET",
            "/vapix/ws-data-stream",
            true,
        );
        assert_eq!(other_uri, Err(Rejection::Invalid));
    }

    #[test]
    fn rfc2069_form_from_the_rtsp_example() {
        let url = "rtsp://192.0.2.57/axis-media/media.amp?camera=1&video=0&audio=0&event=on&analytics=polygon";
        let r = compute_response(
            "bridge",
            "AXIS_B8A44F3E9D21",
            "fixture-pass",
            "DESCRIBE",
            url,
            "0000a41fY2958364017c3e8d06b19f5a27d4c80e6b3f9a2",
            None,
        );
        assert_eq!(r, "bd2d2a8125c84fff71fadcb6e108cf85");
    }

    #[test]
    fn irregular_headers_parse() {
        let p = parse_authorization(
            "digest   username = \"bridge\",realm=\"AXIS_X\" ,  nonce=abc,uri=\"/a?b=c,d\",,response=\"0f\" , qop=\"auth\",stale, nc=00000002,cnonce=\"x\\\"y\"",
        )
        .unwrap();
        assert_eq!(p.username, "bridge");
        assert_eq!(p.realm, "AXIS_X");
        assert_eq!(p.nonce, "abc");
        assert_eq!(p.uri, "/a?b=c,d");
        assert_eq!(p.response, "0f");
        assert_eq!(p.qop.as_deref(), Some("auth"));
        assert_eq!(p.nc.as_deref(), Some("00000002"));
        assert_eq!(p.cnonce.as_deref(), Some("x\"y"));
        assert!(parse_authorization("Basic YnJpZGdlOng=").is_none());
        assert!(parse_authorization("Digest").is_none());
        assert!(parse_authorization("Digest username=\"unterminated").is_none());
        assert!(parse_authorization("").is_none());
        assert_eq!(parse_params("=,=x,\"").len(), 0);
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(new_nonce(), new_nonce());
    }
}
