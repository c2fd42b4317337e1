//! SOAP 1.2 envelopes for the ONVIF device and events services: built as text (a handful of
//! fixed shapes, values escaped), parsed with roxmltree under the same node cap as the RTSP
//! metadata documents, elements matched by namespace URI, never by prefix.

use roxmltree::{Document, Node, ParsingOptions};

use crate::sources::limits::MAX_XML_NODES;

/// SOAP 1.2 envelope namespace.
pub const SOAP_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing namespace (subscription references, `wsa:Action`, `wsa:To`).
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";
/// ONVIF device service namespace (`tds`).
pub const TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
/// ONVIF events service namespace (`tev`).
pub const TEV: &str = "http://www.onvif.org/ver10/events/wsdl";
/// ONVIF schema namespace (`tt`).
pub const TT: &str = crate::sources::rtsp::onvif::TT;
/// WS-BaseNotification namespace (`wsnt`).
pub const WSNT: &str = crate::sources::rtsp::onvif::WSNT;
/// ONVIF topic namespace (`tns1`).
pub const TNS1: &str = "http://www.onvif.org/ver10/topics";
/// The topic expression dialect ONVIF devices support (`|` alternatives, `//.` subtrees).
pub const CONCRETE_SET: &str = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet";

/// A reply that is not a usable SOAP envelope, or a SOAP fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// Not well-formed, not an envelope, or without the expected element.
    #[error("malformed SOAP reply: {0}")]
    Malformed(String),
    /// A `s:Fault`: its code and subcode local names (e.g. `Sender`, `NotAuthorized`) and text.
    #[error("SOAP fault {code}/{subcode}: {reason}")]
    Fault {
        /// `s:Code/s:Value` local name.
        code: String,
        /// Innermost `s:Subcode/s:Value` local name, empty when none.
        subcode: String,
        /// `s:Reason/s:Text`.
        reason: String,
    },
}

impl SoapError {
    /// Whether the device refused our credentials (`ter:NotAuthorized`, `wsse:FailedAuthentication`).
    pub fn is_auth(&self) -> bool {
        matches!(self, SoapError::Fault { subcode, .. }
            if matches!(subcode.as_str(), "NotAuthorized" | "FailedAuthentication" | "InvalidSecurity" | "MessageExpired"))
    }

    /// Whether the fault says the subscription is gone (`wsrf-rw:ResourceUnknownFault`).
    pub fn is_resource_unknown(&self) -> bool {
        matches!(self, SoapError::Fault { subcode, reason, .. }
            if subcode.contains("ResourceUnknown") || reason.contains("ResourceUnknown"))
    }
}

/// Escapes text for an XML attribute or element.
pub fn escape(s: &str) -> String {
    crate::observe::status_page::escape(s)
}

/// A SOAP 1.2 envelope with the namespaces every request here uses declared on it.
pub fn envelope(header: &str, body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="{env}" xmlns:wsa="{wsa}" xmlns:tds="{tds}" xmlns:tev="{tev}" "#,
            r#"xmlns:wsnt="{wsnt}" xmlns:tt="{tt}" xmlns:tns1="{tns1}">"#,
            r#"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        ),
        env = SOAP_ENV,
        wsa = WSA,
        tds = TDS,
        tev = TEV,
        wsnt = WSNT,
        tt = TT,
        tns1 = TNS1,
        header = header,
        body = body,
    )
}

/// WS-Addressing headers for a request to a subscription (`wsa:Action`, `wsa:To`).
pub fn addressing(action: &str, to: &str) -> String {
    format!(
        r#"<wsa:Action>{}</wsa:Action><wsa:To>{}</wsa:To>"#,
        escape(action),
        escape(to)
    )
}

/// Parses a reply under the node cap.
pub fn parse(text: &str) -> Result<Document<'_>, SoapError> {
    let options = ParsingOptions {
        nodes_limit: MAX_XML_NODES,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|e| SoapError::Malformed(e.to_string()))
}

/// The first element of the envelope's body, or the fault it holds as an error.
pub fn body<'a, 'i>(doc: &'a Document<'i>) -> Result<Node<'a, 'i>, SoapError> {
    let root = doc.root_element();
    if !is(root, SOAP_ENV, "Envelope") {
        return Err(SoapError::Malformed(format!(
            "root element is {:?}, not a SOAP 1.2 Envelope",
            root.tag_name().name()
        )));
    }
    let body = child(root, SOAP_ENV, "Body")
        .ok_or_else(|| SoapError::Malformed("envelope without Body".into()))?;
    let first = elements(body)
        .next()
        .ok_or_else(|| SoapError::Malformed("empty Body".into()))?;
    if is(first, SOAP_ENV, "Fault") {
        return Err(fault(first));
    }
    Ok(first)
}

/// Parses a reply and returns its body's element named `ns`:`local`, or why not.
pub fn expect<'a, 'i>(
    doc: &'a Document<'i>,
    ns: &str,
    local: &str,
) -> Result<Node<'a, 'i>, SoapError> {
    let b = body(doc)?;
    if is(b, ns, local) {
        Ok(b)
    } else {
        Err(SoapError::Malformed(format!(
            "expected {local}, got {}",
            b.tag_name().name()
        )))
    }
}

fn fault(f: Node) -> SoapError {
    let code_node = child(f, SOAP_ENV, "Code");
    let value = |n: Option<Node>| {
        n.and_then(|n| child(n, SOAP_ENV, "Value"))
            .and_then(|v| v.text())
            .map(|t| local_name(t.trim()).to_string())
            .unwrap_or_default()
    };
    let code = value(code_node);
    let mut subcode = String::new();
    let mut cur = code_node.and_then(|c| child(c, SOAP_ENV, "Subcode"));
    while let Some(s) = cur {
        subcode = value(Some(s));
        cur = child(s, SOAP_ENV, "Subcode");
    }
    let reason = child(f, SOAP_ENV, "Reason")
        .and_then(|r| child(r, SOAP_ENV, "Text"))
        .and_then(|t| t.text())
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect();
    SoapError::Fault {
        code,
        subcode,
        reason,
    }
}

/// `ter:NotAuthorized` → `NotAuthorized`.
pub fn local_name(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// Whether `n` is the element `ns`:`local`.
pub fn is(n: Node, ns: &str, local: &str) -> bool {
    n.is_element() && n.tag_name().name() == local && n.tag_name().namespace() == Some(ns)
}

/// Child elements.
pub fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(Node::is_element)
}

/// The first child element `ns`:`local`.
pub fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, local: &str) -> Option<Node<'a, 'i>> {
    elements(n).find(|c| is(*c, ns, local))
}

/// The first descendant element `ns`:`local`.
pub fn descendant<'a, 'i>(n: Node<'a, 'i>, ns: &str, local: &str) -> Option<Node<'a, 'i>> {
    n.descendants().find(|c| is(*c, ns, local))
}

/// Trimmed text of the first descendant `ns`:`local`.
pub fn text_of<'a>(n: Node<'a, '_>, ns: &str, local: &str) -> Option<&'a str> {
    descendant(n, ns, local)
        .and_then(|c| c.text())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_through_the_parser() {
        let xml = envelope(
            &addressing("http://x/Action", "http://cam/sub?a=1&b=2"),
            "<tds:GetDeviceInformation/>",
        );
        assert!(xml.contains("a=1&amp;b=2"), "{xml}");
        let doc = parse(&xml).unwrap();
        let b = expect(&doc, TDS, "GetDeviceInformation").unwrap();
        assert_eq!(b.tag_name().name(), "GetDeviceInformation");
        assert!(matches!(
            expect(&doc, TEV, "PullMessages"),
            Err(SoapError::Malformed(_))
        ));
    }

    #[test]
    fn faults_give_code_subcode_and_reason() {
        let xml = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ter="http://www.onvif.org/ver10/error"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>ter:NotAuthorized</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">Sender not Authorized</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        let doc = parse(xml).unwrap();
        let e = body(&doc).unwrap_err();
        assert_eq!(
            e,
            SoapError::Fault {
                code: "Sender".into(),
                subcode: "NotAuthorized".into(),
                reason: "Sender not Authorized".into()
            }
        );
        assert!(e.is_auth());
        assert!(!e.is_resource_unknown());
    }

    #[test]
    fn garbage_and_foreign_roots_are_malformed_not_panics() {
        for bad in [
            "",
            "<a>",
            "not xml",
            "<html><body/></html>",
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"/>",
        ] {
            let r = parse(bad).and_then(|d| body(&d).map(|_| ()));
            assert!(matches!(r, Err(SoapError::Malformed(_))), "{bad}: {r:?}");
        }
    }
}
