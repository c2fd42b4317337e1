//! WS-Security UsernameToken with PasswordDigest (ONVIF Core §5.12.2): the digest is
//! `Base64(SHA1(nonce + created + password))`, and `Created` is written in the camera's clock
//! (the relay's clock plus the offset measured with GetSystemDateAndTime), because devices
//! refuse a token created too far from their own time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

/// WS-Security extension namespace (`wsse`).
pub const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu`).
pub const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// `Type` of a digest password.
pub const PASSWORD_DIGEST: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
/// `EncodingType` of the nonce.
pub const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// `Base64(SHA1(nonce + created + password))`, the nonce as raw bytes.
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    B64.encode(h.finalize())
}

/// The `wsse:Security` header for one request: a fresh 16-byte nonce, `Created` at
/// `camera_now_ms` (the camera's clock).
pub fn security_header(username: &str, password: &str, camera_now_ms: i64) -> String {
    let nonce: [u8; 16] = rand::random();
    header_with(
        username,
        password,
        &nonce,
        &crate::time::format_rfc3339_s(camera_now_ms),
    )
}

/// [`security_header`] with a given nonce and creation time (tests, the spec's example).
pub fn header_with(username: &str, password: &str, nonce: &[u8], created: &str) -> String {
    let esc = crate::sources::onvif::soap::escape;
    format!(
        concat!(
            r#"<wsse:Security s:mustUnderstand="true" xmlns:wsse="{wsse}" xmlns:wsu="{wsu}">"#,
            r#"<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>"#,
            r#"<wsse:Password Type="{pd}">{digest}</wsse:Password>"#,
            r#"<wsse:Nonce EncodingType="{b64}">{nonce}</wsse:Nonce>"#,
            r#"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#
        ),
        wsse = WSSE,
        wsu = WSU,
        user = esc(username),
        pd = PASSWORD_DIGEST,
        digest = password_digest(nonce, created, password),
        b64 = BASE64_BINARY,
        nonce = B64.encode(nonce),
        created = esc(created),
    )
}

/// A UsernameToken as read from a request (the emulator checks it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `wsse:Username`.
    pub username: String,
    /// `wsse:Password` text (the digest).
    pub digest: String,
    /// `wsse:Nonce`, decoded.
    pub nonce: Vec<u8>,
    /// `wsu:Created` text.
    pub created: String,
}

impl Token {
    /// The token in a request's `s:Header`, if any.
    pub fn from_envelope(doc: &roxmltree::Document) -> Option<Token> {
        use crate::sources::onvif::soap::{SOAP_ENV, child, descendant, is};
        let header = child(doc.root_element(), SOAP_ENV, "Header")?;
        let t = descendant(header, WSSE, "UsernameToken")?;
        let text = |ns: &str, local: &str| {
            crate::sources::onvif::soap::elements(t)
                .find(|c| is(*c, ns, local))
                .and_then(|c| c.text())
                .map(|s| s.trim().to_string())
        };
        Some(Token {
            username: text(WSSE, "Username")?,
            digest: text(WSSE, "Password")?,
            nonce: B64.decode(text(WSSE, "Nonce")?).ok()?,
            created: text(WSU, "Created")?,
        })
    }

    /// Whether the digest is right for `password`.
    pub fn verifies(&self, password: &str) -> bool {
        password_digest(&self.nonce, &self.created, password) == self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the ONVIF Application Programmer's Guide (§6.1.1.3).
    #[test]
    fn digest_matches_the_onvif_example() {
        let nonce = B64.decode("LKqI6G/AikKCQrN0zqZFlg==").unwrap();
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn a_header_parses_back_and_verifies_only_with_its_password() {
        let h = security_header("admin", "s3<cr>t", 1_284_623_445_000);
        let xml = crate::sources::onvif::soap::envelope(&h, "<tds:GetDeviceInformation/>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let t = Token::from_envelope(&doc).unwrap();
        assert_eq!(t.username, "admin");
        assert_eq!(t.created, "2010-09-16T07:50:45Z");
        assert_eq!(t.nonce.len(), 16);
        assert!(t.verifies("s3<cr>t"));
        assert!(!t.verifies("wrong"));
    }
}
