//! The gateway's WebSocket protocol (Smithers' gateway frames).
//!
//! On open the server sends `connect.challenge {nonce, ts}`; the client's
//! first request must be `connect {minProtocol, maxProtocol, client, auth?:
//! {token}, subscribe?}`, answered with the `hello` payload (protocol,
//! features, identity, policy, auth, snapshot) — or an error and close 1008.
//! Then `req {id, method, params}` frames get `res` frames, every event is an
//! `event {event, payload, seq, stateVersion}` frame with `seq` counting the
//! connection's event frames, and `tick {ts}` arrives every heartbeat.
//!
//! Each connection has one writer task fed by two queues: a small control
//! queue (responses, ticks, errors) that always goes first, and a bounded
//! data queue (run streams, broadcast events). A consumer that leaves the
//! data queue full longer than `slow_consumer_ms` loses the stream
//! (`run.error` `BackpressureDisconnect`) or, for broadcast events, the
//! socket (close 1013). An event reaches a connection only when its current
//! identity may call the RPC that would return it (`events::readable_by`). `streamRunEvents` follows the store from the
//! requested seq, so a client that reconnects with the last seq it saw gets
//! every later event exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::HeaderMap;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio_util::sync::CancellationToken;

use super::auth::Identity;
use super::events::map_event;
use super::rpc::{
    self, API_VERSION, Caller, RpcCode, RpcError, response_error, response_ok, string_param,
};
use super::{ConnectionSlot, Gateway, bounds, events};
use crate::engine::events::follow;
use crate::http::listen::Peer;
use crate::model::{RunId, now_ms};

/// The protocol version spoken.
pub const PROTOCOL: u64 = 1;
/// Interval of `run.heartbeat` frames on each run stream (Smithers' value).
const RUN_HEARTBEAT: Duration = Duration::from_secs(1);
/// Control frames queued before the connection is dropped.
const CONTROL_QUEUE: usize = 256;
/// How long a close frame may take to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

enum Out {
    Response(Value),
    Event {
        event: String,
        payload: Value,
        state_version: Option<u64>,
    },
    Close(u16, &'static str),
}

struct RunStream {
    run_id: String,
    stop: CancellationToken,
}

struct Conn {
    control: mpsc::Sender<Out>,
    data: mpsc::Sender<Out>,
    identity: Mutex<Option<Identity>>,
    subscribed: Mutex<Option<HashSet<String>>>,
    streams: Mutex<HashMap<String, RunStream>>,
    /// The authenticated connection slot, from the first successful `connect`.
    counted: Mutex<Option<ConnectionSlot>>,
    closed: CancellationToken,
    slow_consumer: Duration,
}

/// An event frame stamped with the global version at write time.
fn event(name: &str, payload: Value) -> Out {
    Out::Event {
        event: name.into(),
        payload,
        state_version: None,
    }
}

impl Conn {
    /// Queues a control frame; a full control queue means the client stopped
    /// reading long ago: drop it.
    fn control(&self, out: Out) {
        if self.control.try_send(out).is_err() {
            self.closed.cancel();
        }
    }

    /// Queues a data frame, waiting up to the slow-consumer grace.
    async fn data(&self, out: Out) -> Result<(), ()> {
        match self.data.send_timeout(out, self.slow_consumer).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) | Err(SendTimeoutError::Closed(_)) => Err(()),
        }
    }

    fn identity(&self) -> Option<Identity> {
        self.identity.lock().expect("identity lock").clone()
    }
}

/// Serves one upgraded socket (from `peer`, with the upgrade request's
/// `headers`) until it closes or the gateway stops.
pub async fn serve(
    gateway: Arc<Gateway>,
    socket: WebSocket,
    headers: HeaderMap,
    peer: Option<Peer>,
) {
    let (sink, mut incoming) = socket.split();
    let limits = &gateway.config.limits;
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (data_tx, data_rx) = mpsc::channel(limits.max_queued_frames);
    let conn = Arc::new(Conn {
        control: control_tx,
        data: data_tx,
        identity: Mutex::new(None),
        subscribed: Mutex::new(None),
        streams: Mutex::new(HashMap::new()),
        counted: Mutex::new(None),
        closed: gateway.shutdown.child_token(),
        slow_consumer: Duration::from_millis(limits.slow_consumer_ms),
    });
    gateway.metrics.ws_opened();
    let writer = tokio::spawn(write_frames(
        gateway.clone(),
        sink,
        control_rx,
        data_rx,
        conn.closed.clone(),
    ));
    conn.control(event(
        "connect.challenge",
        json!({ "nonce": uuid::Uuid::new_v4().to_string(), "ts": now_ms() }),
    ));
    let deadline = Duration::from_millis(limits.auth_deadline_ms);
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn.closed.cancelled() => {}
                _ = tokio::time::sleep(deadline) => {
                    if conn.identity().is_none() {
                        tracing::debug!("websocket closed: authentication deadline exceeded");
                        conn.control(Out::Close(1008, "authentication deadline exceeded"));
                    }
                }
            }
        });
    }
    loop {
        let message = tokio::select! {
            _ = conn.closed.cancelled() => break,
            message = incoming.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(_))) => {
                let error = RpcError::invalid("binary frames are not supported");
                conn.control(Out::Response(response_error("invalid", &error)));
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
        };
        if let Some(response) = handle_frame(&gateway, &conn, (&headers, peer), &text).await {
            // Requests are answered in order; waiting here pushes back on a
            // client that sends faster than it reads.
            if conn.control.send(Out::Response(response)).await.is_err() {
                break;
            }
        }
    }
    conn.closed.cancel();
    for (_, stream) in conn.streams.lock().expect("streams lock").drain() {
        stream.stop.cancel();
    }
    if let Some(slot) = conn.counted.lock().expect("slot lock").take() {
        gateway.connection_closed(slot);
    }
    let _ = writer.await;
    gateway.metrics.ws_closed();
}

async fn write_frames(
    gateway: Arc<Gateway>,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut control: mpsc::Receiver<Out>,
    mut data: mpsc::Receiver<Out>,
    closed: CancellationToken,
) {
    let mut seq: u64 = 0;
    loop {
        let out = tokio::select! {
            biased;
            out = control.recv() => out,
            _ = closed.cancelled() => {
                let code = if gateway.shutdown.is_cancelled() { 1001 } else { 1000 };
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close(code, "closing"))).await;
                break;
            }
            out = data.recv() => out,
        };
        let message = match out {
            None => break,
            Some(Out::Close(code, reason)) => {
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close(code, reason))).await;
                closed.cancel();
                break;
            }
            Some(Out::Response(frame)) => Message::Text(frame.to_string().into()),
            Some(Out::Event {
                event,
                payload,
                state_version,
            }) => {
                seq += 1;
                let state_version = state_version.unwrap_or_else(|| gateway.events.state_version());
                let frame = json!({
                    "type": "event", "event": event, "payload": payload, "seq": seq,
                    "stateVersion": state_version, "apiVersion": API_VERSION,
                });
                Message::Text(frame.to_string().into())
            }
        };
        // A client that stopped reading blocks this send; closing the
        // connection (or the gateway) must still end it.
        let sent = tokio::select! {
            sent = sink.send(message) => sent.is_ok(),
            _ = closed.cancelled() => false,
        };
        if !sent {
            closed.cancel();
            break;
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The upgrade request's headers and the connection's peer: what `connect`
/// authenticates besides the frame's token.
type Upgrade<'a> = (&'a HeaderMap, Option<Peer>);

/// Handles one client frame; `None` when the response was already queued.
async fn handle_frame(
    gateway: &Arc<Gateway>,
    conn: &Arc<Conn>,
    upgrade: Upgrade<'_>,
    text: &str,
) -> Option<Value> {
    let (id, method, params) = match bounds::parse_request(text) {
        Ok(request) => request,
        Err((id, error)) => return Some(response_error(&id, &error)),
    };
    let (id, method) = (id.as_str(), method.as_str());
    if method == "connect" {
        return Some(match connect(gateway, conn, upgrade, &params).await {
            Ok(hello) => response_ok(id, hello),
            Err(error) => {
                let response = response_error(id, &error);
                conn.control(Out::Response(response));
                // 1013 "try again later" for a full house, 1008 otherwise.
                conn.control(if error.code == RpcCode::ConnectionLimit.as_str() {
                    Out::Close(1013, "connection limit reached")
                } else {
                    Out::Close(1008, "authentication failed")
                });
                return None;
            }
        });
    }
    let Some(identity) = conn.identity() else {
        let error = RpcError::new(RpcCode::Unauthorized, "Connect first");
        return Some(response_error(id, &error));
    };
    gateway.metrics.rpc_called();
    if !identity.may_call(method) {
        return Some(response_error(id, &RpcError::missing_scope(method)));
    }
    if method == "streamRunEvents" {
        return match stream_run_events(gateway, conn, id, &params).await {
            Ok(()) => None,
            Err(error) => Some(response_error(id, &error)),
        };
    }
    let caller = Caller {
        identity,
        websocket: true,
    };
    Some(
        match rpc::dispatch(gateway, &caller, method, &params).await {
            Ok(payload) => response_ok(id, payload),
            Err(error) => response_error(id, &error),
        },
    )
}

/// `connect`: negotiates the protocol, authenticates, answers `hello`.
async fn connect(
    gateway: &Arc<Gateway>,
    conn: &Arc<Conn>,
    (headers, peer): Upgrade<'_>,
    params: &Value,
) -> Result<Value, RpcError> {
    if !params.is_object() {
        return Err(RpcError::invalid("Connect params must be an object"));
    }
    let (Some(min), Some(max)) = (
        params.get("minProtocol").and_then(Value::as_f64),
        params.get("maxProtocol").and_then(Value::as_f64),
    ) else {
        return Err(RpcError::invalid(
            "Connect request is missing protocol negotiation fields",
        ));
    };
    if params.get("client").is_none_or(Value::is_null) {
        return Err(RpcError::invalid(
            "Connect request is missing protocol negotiation fields",
        ));
    }
    if min > PROTOCOL as f64 || max < PROTOCOL as f64 {
        return Err(RpcError::new(
            RpcCode::ProtocolUnsupported,
            format!("Gateway protocol {PROTOCOL} is not supported by the client"),
        ));
    }
    let token = params
        .get("auth")
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str);
    let identity = gateway.auth().authenticate(headers, peer, token)?;
    let first = conn.counted.lock().expect("slot lock").is_none();
    if first {
        let slot = gateway.connection_opened(&identity)?;
        *conn.counted.lock().expect("slot lock") = Some(slot);
        start_connection_tasks(gateway, conn);
    }
    let subscribe = params
        .get("subscribe")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<HashSet<_>>()
        });
    *conn.subscribed.lock().expect("subscribe lock") = subscribe;
    *conn.identity.lock().expect("identity lock") = Some(identity.clone());
    Ok(json!({
        "protocol": PROTOCOL,
        "features": super::FEATURES,
        "identity": gateway.identity(),
        "policy": { "heartbeatMs": gateway.config.heartbeat_ms },
        "auth": {
            "sessionToken": uuid::Uuid::new_v4().to_string(),
            "role": identity.role,
            "scopes": identity.scopes,
            "userId": identity.user_id,
            "tokenId": identity.token_id,
        },
        "snapshot": gateway.snapshot(&identity).await?,
    }))
}

/// Ticks and broadcast events, from the first successful `connect` on.
fn start_connection_tasks(gateway: &Arc<Gateway>, conn: &Arc<Conn>) {
    let heartbeat = Duration::from_millis(gateway.config.heartbeat_ms);
    let ticker = conn.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(heartbeat);
        interval.tick().await;
        loop {
            tokio::select! {
                _ = ticker.closed.cancelled() => return,
                _ = interval.tick() => ticker.control(event("tick", json!({ "ts": now_ms() }))),
            }
        }
    });
    let mut events = gateway.events.subscribe();
    let conn = conn.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = conn.closed.cancelled() => return,
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    conn.control(Out::Close(1013, "event backpressure"));
                    return;
                }
                Err(_) => return,
            };
            // The same read check as the RPC that would return the event
            // (its identity can change with a later `connect`).
            if !conn
                .identity()
                .is_some_and(|identity| events::readable_by(&identity, &event.event))
            {
                continue;
            }
            if let Some(run_id) = &event.run_id {
                let wanted = conn
                    .subscribed
                    .lock()
                    .expect("subscribe lock")
                    .as_ref()
                    .is_none_or(|ids| ids.contains(run_id));
                let streamed = conn
                    .streams
                    .lock()
                    .expect("streams lock")
                    .values()
                    .any(|s| &s.run_id == run_id);
                if !wanted || streamed {
                    continue;
                }
            }
            let out = Out::Event {
                event: event.event.clone(),
                payload: event.payload.clone(),
                state_version: Some(event.state_version),
            };
            if conn.data(out).await.is_err() {
                conn.control(Out::Close(1013, "event backpressure"));
                return;
            }
        }
    });
}

/// `streamRunEvents {runId, afterSeq?}`: answers `{streamId, runId, afterSeq,
/// currentSeq}`, then replays the run's events after `afterSeq` (the whole
/// retained window when absent) and streams new ones as `run.event` frames
/// until the run ends. Stream seqs are the run's event seqs plus one, so the
/// first event is 1 and `afterSeq: 0` means "from the start".
async fn stream_run_events(
    gateway: &Arc<Gateway>,
    conn: &Arc<Conn>,
    id: &str,
    params: &Value,
) -> Result<(), RpcError> {
    let raw = string_param(params, "runId")
        .ok_or_else(|| RpcError::new(RpcCode::InvalidRunId, "runId is required"))?;
    let after = match params.get("afterSeq") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            RpcError::new(
                RpcCode::SeqOutOfRange,
                "afterSeq must be a non-negative integer",
            )
        })?),
    };
    let not_found = || RpcError::new(RpcCode::RunNotFound, format!("Run not found: {raw}"));
    let run_id = RunId::parse(&raw).map_err(|_| not_found())?;
    let run = gateway.run(&run_id).await.map_err(|_| not_found())?;
    let current = run.next_seq;
    if let Some(after) = after
        && after > current
    {
        return Err(RpcError::new(
            RpcCode::SeqOutOfRange,
            format!("afterSeq {after} is newer than current seq {current}"),
        ));
    }
    let window = gateway.config.limits.event_window;
    let first = current.saturating_sub(window) + 1;
    let from = after.unwrap_or(0);
    let gap = (from + 1 < first).then_some((from + 1, first - 1));
    let start = from.max(first - 1);
    let stream_id = uuid::Uuid::new_v4().to_string();
    let stop = conn.closed.child_token();
    conn.streams.lock().expect("streams lock").insert(
        stream_id.clone(),
        RunStream {
            run_id: raw.clone(),
            stop: stop.clone(),
        },
    );
    let response = response_ok(
        id,
        json!({ "streamId": stream_id, "runId": raw, "afterSeq": after, "currentSeq": current }),
    );
    conn.control
        .send(Out::Response(response))
        .await
        .map_err(|_| RpcError::new(RpcCode::ServerError, "connection closed"))?;
    tokio::spawn(run_stream(
        gateway.clone(),
        conn.clone(),
        stream_id,
        run_id,
        gap,
        start as i64 - 1,
        stop,
    ));
    Ok(())
}

/// Whether the connection's current identity may still read its streams
/// (checked per frame: a later `connect` may have changed the identity).
fn may_stream(conn: &Conn) -> bool {
    conn.identity()
        .is_some_and(|identity| identity.may_call("streamRunEvents"))
}

async fn run_stream(
    gateway: Arc<Gateway>,
    conn: Arc<Conn>,
    stream_id: String,
    run_id: RunId,
    gap: Option<(u64, u64)>,
    store_after: i64,
    stop: CancellationToken,
) {
    let raw = run_id.to_string();
    let stream_error = |code: &str, message: String| {
        event(
            "run.error",
            json!({ "streamId": stream_id, "runId": raw,
                    "error": { "version": API_VERSION, "code": code, "message": message } }),
        )
    };
    let mut slow = false;
    if let Some((from_seq, to_seq)) = gap
        && may_stream(&conn)
    {
        let snapshot = gateway.run_snapshot(&run_id).await.unwrap_or(Value::Null);
        let frame = event(
            "run.gap_resync",
            json!({ "apiVersion": API_VERSION, "type": "GapResync", "streamId": stream_id,
                    "runId": raw, "fromSeq": from_seq, "toSeq": to_seq, "snapshot": snapshot }),
        );
        slow = conn.data(frame).await.is_err();
    }
    let events = follow(gateway.engine.store().clone(), run_id.clone(), store_after);
    let mut events = std::pin::pin!(events);
    let mut heartbeat = tokio::time::interval(RUN_HEARTBEAT);
    heartbeat.tick().await;
    while !slow {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = heartbeat.tick() => {
                conn.control(event("run.heartbeat", json!({
                    "apiVersion": API_VERSION, "type": "Heartbeat", "streamId": stream_id,
                    "runId": raw, "ts": now_ms(),
                })));
            }
            next = events.next() => match next {
                Some(Ok(_)) if !may_stream(&conn) => {
                    let refused = RpcError::missing_scope("streamRunEvents");
                    conn.control(stream_error(refused.code, refused.message));
                    break;
                }
                Some(Ok(stored)) => {
                    let (name, payload) = map_event(&stored);
                    let frame = event("run.event", json!({
                        "streamId": stream_id, "apiVersion": API_VERSION, "type": "RunEvent",
                        "runId": raw, "event": name, "payload": payload, "seq": stored.seq + 1,
                        "stateVersion": gateway.events.state_version(),
                    }));
                    slow = conn.data(frame).await.is_err();
                }
                Some(Err(e)) => {
                    conn.control(stream_error("Internal", format!("streamRunEvents replay failed: {e}")));
                    break;
                }
                None => break,
            }
        }
    }
    if slow && !stop.is_cancelled() {
        gateway.metrics.backpressure_disconnect();
        tracing::warn!(run = %raw, stream = %stream_id, "run event stream disconnected for backpressure");
        let limit = gateway.config.limits.max_queued_frames;
        conn.control(stream_error(
            "BackpressureDisconnect",
            format!("Run event stream outbound queue exceeded {limit} frames; disconnecting slow consumer."),
        ));
    }
    conn.streams
        .lock()
        .expect("streams lock")
        .remove(&stream_id);
}
