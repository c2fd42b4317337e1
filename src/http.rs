//! The relay's HTTP endpoint on `[relay] http`: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `/status.json`.
//!
//! With `[relay] http_username` and `http_password`, `/status` and `/status.json` (and `/`)
//! ask for HTTP Basic auth: they show serials, topics and dead-lettered payloads. `/healthz`,
//! `/readyz` and `/metrics` stay open, so container probes and Prometheus scrapes need no
//! password (their figures carry no payloads).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use prometheus_client::registry::Registry;

use crate::config::Secret;
use crate::observe::{Observed, metrics, status_page};

struct AppState {
    observed: Arc<Observed>,
    registry: Registry,
}

/// The user name and password `/status` asks for.
#[derive(Debug, Clone)]
pub struct Login {
    /// `[relay] http_username`.
    pub username: String,
    /// `[relay] http_password`.
    pub password: Secret,
}

impl Login {
    /// The login of `[relay]`, when both halves are set.
    pub fn from_config(relay: &crate::config::RelayConfig) -> Option<Self> {
        Some(Self {
            username: relay.http_username.clone()?,
            password: relay.http_password.clone()?,
        })
    }

    /// Whether `headers` carry this login as HTTP Basic auth (compared in constant time).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let want = format!("{}:{}", self.username, self.password.expose());
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
        else {
            return false;
        };
        given.len() == want.len()
            && given
                .iter()
                .zip(want.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The routes, reading `observed`; `login` protects the status pages.
pub fn router(observed: Arc<Observed>, login: Option<Login>) -> Router {
    let state = Arc::new(AppState {
        registry: metrics::registry(observed.clone()),
        observed,
    });
    let mut status_routes = Router::new()
        .route("/", get(status))
        .route("/status", get(status))
        .route("/status.json", get(status_json));
    if let Some(login) = login {
        let login = Arc::new(login);
        status_routes =
            status_routes.layer(middleware::from_fn(move |req: Request, next: Next| {
                let login = login.clone();
                async move {
                    if login.admits(req.headers()) {
                        next.run(req).await
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(
                                header::WWW_AUTHENTICATE,
                                "Basic realm=\"edgerelay\", charset=\"UTF-8\"",
                            )],
                            "password required\n",
                        )
                            .into_response()
                    }
                }
            }));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(status_routes)
        .with_state(state)
}

/// Binds `addr` (fails now, before the relay starts, if it cannot).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("relay.http: cannot listen on {addr}"))
}

/// Serves until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    observed: Arc<Observed>,
    login: Option<Login>,
) {
    if let Err(e) = axum::serve(listener, router(observed, login)).await {
        tracing::error!(error = %e, "HTTP endpoint stopped");
    }
}

/// 200 while every relay task lives; 503 with the dead task's name once one died (the
/// process then stops by itself, non-zero, so the container is restarted).
async fn healthz(State(s): State<Arc<AppState>>) -> Response {
    match s.observed.dead_task() {
        None => "ok\n".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// 200 once started; 503 while starting or stopping, and while a destination's outbox cannot
/// be written (the body names it).
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let o = s.observed.clone();
    let reasons = tokio::task::spawn_blocking(move || o.not_ready_reasons())
        .await
        .unwrap_or_else(|_| vec!["unknown".into()]);
    if reasons.is_empty() {
        "ready\n".into_response()
    } else {
        let body = format!("not ready: {}\n", reasons.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    let st = s.clone();
    // Reading the outboxes takes their locks: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || metrics::render(&st.registry))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn status(State(s): State<Arc<AppState>>) -> Html<String> {
    let o = s.observed.clone();
    let page =
        tokio::task::spawn_blocking(move || status_page::render(&o.snapshot(), o.is_ready()))
            .await
            .unwrap_or_default();
    Html(page)
}

async fn status_json(State(s): State<Arc<AppState>>) -> Response {
    let o = s.observed.clone();
    let body = tokio::task::spawn_blocking(move || status_page::json(&o.snapshot(), o.is_ready()))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// `edgerelay healthcheck`: GETs `url`; true on a 2xx answer within `timeout`.
pub async fn check(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", resp.status()))
    }
}
