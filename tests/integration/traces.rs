//! One trace follows an HTTP change through the outbox and the broker to the fan-out on
//! every instance. A small OTLP/HTTP receiver inside the test collects the spans.

use crate::support::process::RoomcastProcess;
use crate::support::redis::RedisServer;
use crate::support::{TestClient, http, wait_ready};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use roomcast::protocol::Encoding;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A collected span: name, ids, and the instance that sent it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    instance: String,
}

/// An OTLP/HTTP (JSON) trace receiver on a loopback port.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let collected = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let collected = collected.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let collected = collected.clone();
                            async move {
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                if let Ok(export) = serde_json::from_slice::<Value>(&body) {
                                    collected.lock().unwrap().extend(spans_of(&export));
                                }
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                                response
                                    .headers_mut()
                                    .insert("content-type", "application/json".parse().unwrap());
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

/// The spans of one OTLP JSON export request.
fn spans_of(export: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let instance = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.instance.id")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_ascii_lowercase();
                spans.push(Span {
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    instance: instance.clone(),
                });
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_follows_a_change_from_http_to_every_instance() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER: &str = "00f067aa0ba902b7";
    let receiver = Receiver::start().await;
    let redis = RedisServer::start().await;
    let (redis_url, endpoint) = (redis.url(), receiver.endpoint());
    let mut nodes = Vec::new();
    for node in ["alpha", "beta"] {
        let process = RoomcastProcess::start(&[
            ("ROOMCAST_REDIS_URL", redis_url.as_str()),
            ("ROOMCAST_NODE_ID", node),
            ("ROOMCAST_TRACING__OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ])
        .await;
        wait_ready(&process.addr).await;
        nodes.push(process);
    }
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut watcher = TestClient::connect(&node.url(), Encoding::MsgPack).await;
        watcher.subscribe("project:9", None).await;
        watchers.push(watcher);
    }
    let traceparent = format!("00-{TRACE}-{CALLER}-01");
    let created = http::json(
        &nodes[0].addr,
        "POST",
        "/api/v1/issues",
        &[("traceparent", &traceparent)],
        &json!({"project_id": 9, "title": "traced"}),
    )
    .await;
    assert_eq!(created.status, 201);
    for watcher in &mut watchers {
        let (_, _, _, event) = watcher.message().await;
        assert_eq!(event["action"], "create");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.of_trace(TRACE);
        let delivers = spans.iter().filter(|s| s.name == "room.deliver").count();
        let relays = spans.iter().filter(|s| s.name == "outbox.relay").count();
        if relays >= 2 && delivers >= 2 {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans never arrived: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let request = spans
        .iter()
        .find(|s| s.name == "http.request" && s.instance == "alpha")
        .expect("the HTTP request span");
    assert_eq!(
        request.parent_span_id, CALLER,
        "the incoming traceparent is honoured"
    );
    // The change wrote two outbox rows (its event, and its audit entry for the audit
    // rooms): each relayed in the request's trace.
    let relays: Vec<_> = spans.iter().filter(|s| s.name == "outbox.relay").collect();
    for relay in &relays {
        assert_eq!(
            relay.parent_span_id, request.span_id,
            "the relay continues the request's trace"
        );
    }
    let mut parents = Vec::new();
    for instance in ["alpha", "beta"] {
        let deliver = spans
            .iter()
            .find(|s| s.name == "room.deliver" && s.instance == instance)
            .unwrap_or_else(|| panic!("no delivery span from {instance}: {spans:#?}"));
        assert!(
            relays.iter().any(|r| r.span_id == deliver.parent_span_id),
            "{instance} delivers under the relay's publish: {spans:#?}"
        );
        parents.push(deliver.parent_span_id.clone());
    }
    assert_eq!(parents[0], parents[1], "both deliver the one event");
}
