//! HTTP routes of the emulated camera and their Digest protection.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::digest::{self, Rejection};
use super::{Fault, Shared, bump, script, ws};

type Sh = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/vapix/ws-data-stream", get(ws_stream))
        .route("/axis-cgi/wssession.cgi", get(wssession))
        .route("/axis-cgi/basicdeviceinfo.cgi", post(basic_device_info))
        .route("/vapix/services", post(services))
        .route("/axis-cgi/virtualinput/activate.cgi", get(activate))
        .route("/axis-cgi/virtualinput/deactivate.cgi", get(deactivate))
        .route("/axis-cgi/jpg/image.cgi", get(image))
        .with_state(shared)
}

fn target(uri: &Uri) -> &str {
    uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/")
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn query_get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

impl Shared {
    /// A `401` with a fresh, remembered nonce.
    fn challenge(&self, stale: bool) -> Response {
        let nonce = digest::new_nonce();
        self.remember_nonce(&nonce);
        let mut v = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"",
            self.realm
        );
        if stale {
            v.push_str(", stale=true");
        }
        let mut res = (StatusCode::UNAUTHORIZED, "401 Unauthorized\n").into_response();
        if let Ok(h) = HeaderValue::from_str(&v) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, h);
        }
        res
    }

    /// `None` when the request may proceed, else the `401` to answer.
    fn deny(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
        if !self.cfg.require_auth && self.fault() != Some(Fault::RejectCredentials) {
            return None;
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            bump(&self.counters.challenges);
            return Some(self.challenge(false));
        };
        if self.fault() == Some(Fault::RejectCredentials) {
            bump(&self.counters.auth_failures);
            return Some(self.challenge(false));
        }
        let parsed = value.to_str().ok().and_then(digest::parse_authorization);
        let Some(p) = parsed else {
            bump(&self.counters.auth_failures);
            return Some(self.challenge(false));
        };
        let result = digest::verify(
            &p,
            &self.cfg.username,
            &self.realm,
            &self.cfg.password,
            method.as_str(),
            target(uri),
            self.nonce_known(&p.nonce),
        );
        match result {
            Ok(()) => None,
            Err(Rejection::StaleNonce) => {
                bump(&self.counters.challenges);
                Some(self.challenge(true))
            }
            Err(Rejection::Invalid) => {
                bump(&self.counters.auth_failures);
                tracing::debug!(user = %p.username, "emulator: Digest rejected");
                Some(self.challenge(false))
            }
        }
    }
}

async fn ws_stream(
    State(sh): Sh,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if sh.fault() == Some(Fault::HoldUpgrade) {
        bump(&sh.counters.upgrades_held);
        sh.while_fault(Fault::HoldUpgrade).await;
    }
    let q = query_pairs(&uri);
    if let Some(token) = query_get(&q, "wssession") {
        if sh.fault() == Some(Fault::RejectCredentials) {
            bump(&sh.counters.auth_failures);
            return sh.challenge(false);
        }
        // A plain GET does not use up the token.
        if upgrade.is_ok() && !sh.take_token(token) {
            bump(&sh.counters.auth_failures);
            return sh.challenge(false);
        }
    } else if let Some(res) = sh.deny(&method, &uri, &headers) {
        return res;
    }
    match upgrade {
        Ok(up) => {
            bump(&sh.counters.upgrades_ok);
            let shared = sh.clone();
            up.on_upgrade(move |socket| ws::run_session(shared, socket))
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn wssession(State(sh): Sh, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(res) = sh.deny(&method, &uri, &headers) {
        return res;
    }
    (
        [(header::CONTENT_TYPE, "text/plain")],
        format!("{}\n", sh.issue_token()),
    )
        .into_response()
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn basic_device_info(
    State(sh): Sh,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: Option<Value> = serde_json::from_slice(&body).ok();
    let api_method = req
        .as_ref()
        .and_then(|r| r.get("method"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if api_method.as_deref() != Some("getAllUnrestrictedProperties")
        && let Some(res) = sh.deny(&method, &uri, &headers)
    {
        return res;
    }
    let Some(req) = req.filter(Value::is_object) else {
        return json_response(script::reply(
            "1.3",
            None,
            None,
            Err((4002, "JSON syntax error")),
        ));
    };
    let context = req.get("context");
    let api_method = api_method.unwrap_or_default();
    let props = script::device_properties(sh.serial_str());
    let data = match api_method.as_str() {
        "getAllProperties" | "getAllUnrestrictedProperties" => Ok(props),
        "getProperties" => match req
            .pointer("/params/propertyList")
            .and_then(Value::as_array)
        {
            Some(names) => Ok(names
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|n| props.get(n).map(|v| (n.to_string(), v.clone())))
                .collect::<Map<_, _>>()),
            None => Err((4000, "Invalid parameter: params.propertyList")),
        },
        _ => Err((4004, "Method not supported")),
    };
    let data = data.map(|p| {
        let mut d = Map::new();
        d.insert("propertyList".into(), Value::Object(p));
        Value::Object(d)
    });
    json_response(script::reply("1.3", context, Some(&api_method), data))
}

impl Shared {
    fn serial_str(&self) -> &str {
        &self.cfg.serial
    }
}

async fn services(
    State(sh): Sh,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(res) = sh.deny(&method, &uri, &headers) {
        return res;
    }
    let action = [
        header::HeaderName::from_static("soapaction"),
        header::CONTENT_TYPE,
    ]
    .iter()
    .filter_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
    .any(|v| v.contains("GetEventInstances"));
    let in_body = String::from_utf8_lossy(&body).contains("GetEventInstances");
    if action || in_body {
        super::bump(&sh.counters.catalog_reads);
        let extra = super::lock(&sh.extra_catalog).concat();
        let xml = script::EVENT_INSTANCES_XML.replacen(
            "</wstop:TopicSet>",
            &format!("{extra}</wstop:TopicSet>"),
            1,
        );
        (
            [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
            xml,
        )
            .into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
            SOAP_FAULT,
        )
            .into_response()
    }
}

const SOAP_FAULT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://www.w3.org/2003/05/soap-envelope\"><SOAP-ENV:Body><SOAP-ENV:Fault><SOAP-ENV:Code><SOAP-ENV:Value>SOAP-ENV:Sender</SOAP-ENV:Value></SOAP-ENV:Code><SOAP-ENV:Reason><SOAP-ENV:Text xml:lang=\"en\">Action not supported by the emulator</SOAP-ENV:Text></SOAP-ENV:Reason></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>\n";

async fn activate(State(sh): Sh, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    virtual_input(sh, method, uri, headers, true).await
}

async fn deactivate(State(sh): Sh, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    virtual_input(sh, method, uri, headers, false).await
}

async fn virtual_input(
    sh: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    active: bool,
) -> Response {
    if let Some(res) = sh.deny(&method, &uri, &headers) {
        return res;
    }
    let xml = |body: String| ([(header::CONTENT_TYPE, "text/xml")], body).into_response();
    let q = query_pairs(&uri);
    let (Some(schema), Some(port)) = (query_get(&q, "schemaversion"), query_get(&q, "port")) else {
        return xml(script::virtual_input_error(10, "Missing argument"));
    };
    if schema.trim() != "1" && !schema.trim().starts_with("1.") {
        return xml(script::virtual_input_error(
            30,
            "Unsupported schema version",
        ));
    }
    let port = match port.trim().parse::<u32>() {
        Ok(p) if (1..=32).contains(&p) => p,
        _ => return xml(script::virtual_input_error(20, "No such virtual input")),
    };
    let duration = match query_get(&q, "duration") {
        None => None,
        Some(_) if !active => None,
        Some(d) => match d.trim().parse::<u64>() {
            Ok(s) if s > 0 && s <= 86_400 => Some(std::time::Duration::from_secs(s)),
            _ => return xml(script::virtual_input_error(50, "Invalid duration")),
        },
    };
    super::bump(&sh.counters.virtual_input_calls);
    let changed = sh.set_virtual_input(port, active);
    if let Some(d) = duration {
        let shared = sh.clone();
        let mut stop = sh.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(d) => { shared.set_virtual_input(port, false); }
                _ = super::stopped(&mut stop) => {}
            }
        });
    }
    xml(script::virtual_input_success(active, changed))
}

async fn image(State(sh): Sh, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(res) = sh.deny(&method, &uri, &headers) {
        return res;
    }
    ([(header::CONTENT_TYPE, "image/jpeg")], script::TINY_JPEG).into_response()
}
