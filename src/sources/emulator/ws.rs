//! One WebSocket session of the event stream: `events:configure` in, replies and
//! `events:notify` frames out, all through the client's queue so they stay in order.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{Client, Fault, Out, Shared, bump, script};
use crate::rules::topic_filter::TopicFilter;

/// Text of the one garbage frame of [`Fault::SendGarbageThenContinue`].
const GARBAGE: &str = "\u{1}<<not json>> {\"apiVersion\":";

/// What the session does after a client frame.
enum Flow {
    Continue,
    Close,
}

/// Serves one upgraded connection until either side closes it or the emulator stops.
pub(super) async fn run_session(shared: Arc<Shared>, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = shared
        .next_client
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut stop = shared.shutdown.subscribe();
    let stopped = *stop.borrow();
    if stopped {
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    shared
        .hub()
        .clients
        .insert(id, Client { tx, filters: None });
    tracing::debug!(client = id, "emulator: WebSocket client connected");
    let mut garbage_sent = false;
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    if let Flow::Close = handle_text(&shared, id, t.as_str(), &mut garbage_sent) {
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {} // binary, ping, pong: nothing to do
            },
            out = rx.recv() => match out {
                Some(Out::Text { text, notify }) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                    if notify {
                        bump(&shared.counters.frames_sent);
                    }
                }
                Some(Out::Close) | None => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                Some(Out::Freeze) => {
                    tracing::debug!(client = id, "emulator: WebSocket client frozen");
                    super::stopped(&mut stop).await;
                    break;
                }
            },
            _ = super::stopped(&mut stop) => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
    let mut hub = shared.hub();
    if hub.clients.remove(&id).is_some() {
        shared.publish_count(&hub);
    }
    tracing::debug!(client = id, "emulator: WebSocket client gone");
}

/// Queues a reply to this client (not an event frame).
fn reply_to(shared: &Shared, id: u64, text: String) {
    if let Some(c) = shared.hub().clients.get(&id) {
        let _ = c.tx.send(Out::Text {
            text,
            notify: false,
        });
    }
}

fn reject(shared: &Shared, id: u64, context: Option<&Value>, code: u32, message: &str) {
    bump(&shared.counters.configures_rejected);
    let method = (code != 2101).then_some("events:configure");
    reply_to(
        shared,
        id,
        script::reply("1.0", context, method, Err((code, message))),
    );
}

/// Parses the filter list: `Err((code, message))` if the device would reject it.
fn parse_filters(list: Option<&Value>) -> Result<Vec<TopicFilter>, (u32, &'static str)> {
    let Some(list) = list else {
        return Err((
            2103,
            "Invalid event datasource payload: eventFilterList is missing",
        ));
    };
    let Some(entries) = list.as_array() else {
        return Err((
            2104,
            "Invalid event datasource payload: eventFilterList is not a list",
        ));
    };
    if entries.is_empty() {
        return Err((
            2104,
            "Invalid event datasource payload: eventFilterList is empty",
        ));
    }
    entries
        .iter()
        .map(|e| {
            let expr = e
                .get("topicFilter")
                .and_then(Value::as_str)
                .ok_or((2104, "Invalid event datasource payload: topicFilter"))?;
            TopicFilter::parse(expr)
                .map_err(|_| (2104, "Invalid event datasource payload: topicFilter"))
        })
        .collect()
}

fn handle_text(shared: &Shared, id: u64, text: &str, garbage_sent: &mut bool) -> Flow {
    let fault = shared.fault();
    let req: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            if fault == Some(Fault::Stall) {
                return Flow::Continue;
            }
            reject(shared, id, None, 2101, "Invalid JSON");
            return Flow::Continue;
        }
    };
    let context = req.get("context");
    let method = req.get("method").and_then(Value::as_str);
    if method != Some("events:configure") {
        if fault == Some(Fault::Stall) {
            return Flow::Continue;
        }
        bump(&shared.counters.configures_rejected);
        let m = method.unwrap_or("");
        reply_to(
            shared,
            id,
            script::reply("1.0", context, Some(m), Err((2102, "Method not supported"))),
        );
        return Flow::Continue;
    }
    let list = req.pointer("/params/eventFilterList");
    if let Some(l) = list {
        shared.hub().configure_log.push(l.clone());
    }
    match fault {
        Some(Fault::Stall) => return Flow::Continue,
        Some(Fault::CloseOnConfigure) => return Flow::Close,
        _ => {}
    }
    let version_ok = req
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v == "1" || v.starts_with("1."));
    if !version_ok {
        reject(shared, id, context, 2100, "API version not supported");
        return Flow::Continue;
    }
    let filters = match parse_filters(list) {
        Ok(f) => f,
        Err((code, message)) => {
            reject(shared, id, context, code, message);
            return Flow::Continue;
        }
    };
    if fault == Some(Fault::RejectConfigure) {
        reject(
            shared,
            id,
            context,
            2104,
            "Invalid event datasource payload: rejected by the emulator",
        );
        return Flow::Continue;
    }
    let mut hub = shared.hub();
    let state: Vec<_> = hub.state.values().cloned().collect();
    let Some(client) = hub.clients.get_mut(&id) else {
        return Flow::Close; // dropped meanwhile
    };
    let send = |text: String, notify: bool| {
        let _ = client.tx.send(Out::Text { text, notify });
    };
    send(
        script::reply(
            "1.0",
            context,
            Some("events:configure"),
            Ok(Value::Object(Map::new())),
        ),
        false,
    );
    if fault == Some(Fault::SendGarbageThenContinue) && !*garbage_sent {
        *garbage_sent = true;
        send(GARBAGE.to_string(), false);
    }
    // Current state of every known property the new filters take: like `Initialized`.
    let now = script::now_ms();
    for mut n in state {
        n.timestamp = Some(now);
        let frame = n.to_frame();
        for _ in filters.iter().filter(|f| f.matches(&n.topic)) {
            send(frame.clone(), true);
        }
    }
    client.filters = Some(filters);
    shared.publish_count(&hub);
    bump(&shared.counters.configures_ok);
    Flow::Continue
}
