//! The relay's HTTP endpoint on `[relay] http`: `/healthz`, `/readyz`, `/metrics`, `/status`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::observe::{Observed, metrics, status_page};

struct AppState {
    observed: Arc<Observed>,
    registry: Registry,
}

/// The routes, reading `observed`.
pub fn router(observed: Arc<Observed>) -> Router {
    let state = Arc::new(AppState {
        registry: metrics::registry(observed.clone()),
        observed,
    });
    Router::new()
        .route("/", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/status", get(status))
        .with_state(state)
}

/// Binds `addr` (fails now, before the relay starts, if it cannot).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("relay.http: cannot listen on {addr}"))
}

/// Serves until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, observed: Arc<Observed>) {
    if let Err(e) = axum::serve(listener, router(observed)).await {
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
