//! The Prometheus registry behind `GET /metrics`.
//!
//! Code records with the `metrics` macros where things happen; this module installs the
//! recorder once per process, describes every metric (HELP text and unit, checked by
//! `promtool check metrics` in the tests), and renders the text format.
//!
//! The metrics recorded for every publication (a dozen of them, on the publish path and
//! in the fan-in and fan-out) are the exception: they are looked up once, when the
//! recorder is installed, and recorded through [`per_publication`]. A macro looks its
//! metric up in the registry at every call (a hash of name and labels, a lock, and a new
//! handle to allocate and drop): together about 5 % of the instructions an instance
//! spends around a publication with 20 local subscribers (`scripts/delivery-cost.sh
//! --redis`).

use metrics::{
    Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The metrics recorded for every publication, looked up once.
pub struct PerPublication {
    /// `roomcast_messages_published_total{result="ok"}`.
    pub published_ok: Counter,
    /// `roomcast_messages_published_total{result="duplicate"}`.
    pub published_duplicate: Counter,
    /// `roomcast_messages_published_total{result="error"}`.
    pub published_error: Counter,
    /// `roomcast_fanin_queue_depth{queue="events"}`.
    pub events_depth: Gauge,
    /// `roomcast_fanin_queue_depth{queue="rooms"}`.
    pub rooms_depth: Gauge,
    /// `roomcast_broker_messages_received_total`.
    pub broker_received: Counter,
    /// `roomcast_broker_pubsub_lag_seconds`.
    pub pubsub_lag: Histogram,
    /// `roomcast_messages_delivered_total`.
    pub delivered: Counter,
    /// `roomcast_delivery_latency_seconds`.
    pub delivery_latency: Histogram,
    /// `roomcast_broker_commands_total{op="publish"}`.
    pub publish_commands: Counter,
    /// `roomcast_broker_publish_calls_total`.
    pub publish_calls: Counter,
    /// `roomcast_broker_circuits_open`.
    pub circuits_open: Gauge,
    /// `roomcast_broker_commands_up`.
    pub commands_up: Gauge,
}

impl PerPublication {
    /// Looks every metric up in the installed recorder (no-op handles without one).
    fn look_up() -> Self {
        let published = |result: &'static str| metrics::counter!("roomcast_messages_published_total", "result" => result);
        PerPublication {
            published_ok: published("ok"),
            published_duplicate: published("duplicate"),
            published_error: published("error"),
            events_depth: metrics::gauge!("roomcast_fanin_queue_depth", "queue" => "events"),
            rooms_depth: metrics::gauge!("roomcast_fanin_queue_depth", "queue" => "rooms"),
            broker_received: metrics::counter!("roomcast_broker_messages_received_total"),
            pubsub_lag: metrics::histogram!("roomcast_broker_pubsub_lag_seconds"),
            delivered: metrics::counter!("roomcast_messages_delivered_total"),
            delivery_latency: metrics::histogram!("roomcast_delivery_latency_seconds"),
            publish_commands: metrics::counter!("roomcast_broker_commands_total", "op" => "publish"),
            publish_calls: metrics::counter!("roomcast_broker_publish_calls_total"),
            circuits_open: metrics::gauge!("roomcast_broker_circuits_open"),
            commands_up: metrics::gauge!("roomcast_broker_commands_up"),
        }
    }
}

static PER_PUBLICATION: OnceLock<PerPublication> = OnceLock::new();

/// The per-publication metrics: those of the installed recorder, or no-op handles
/// before [`install`] (as the macros are then).
pub fn per_publication() -> &'static PerPublication {
    static NOT_INSTALLED: LazyLock<PerPublication> = LazyLock::new(PerPublication::look_up);
    PER_PUBLICATION.get().unwrap_or_else(|| &NOT_INSTALLED)
}

/// Latency buckets, in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the recorder (first call only; later calls return the same handle) and
/// starts its periodic upkeep. Must be called inside a tokio runtime.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            let _ = PER_PUBLICATION.set(PerPublication::look_up());
            metrics::gauge!("roomcast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            register_at_zero();
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// Label values every labelled counter can take, so that each series exists from start.
const LABELLED_COUNTERS: &[(&str, &str, &[&str])] = &[
    (
        "roomcast_messages_published_total",
        "result",
        &["ok", "duplicate", "error"],
    ),
    (
        "roomcast_resumes_total",
        "result",
        &["fresh", "recovered", "lost"],
    ),
    (
        "roomcast_room_resets_total",
        "reason",
        &["epoch_changed", "too_far_behind", "ahead_of_stream"],
    ),
    (
        "roomcast_auth_failures_total",
        "endpoint",
        &["api", "ws", "ws_refresh", "sse", "console"],
    ),
    (
        "roomcast_auth_failures_throttled_total",
        "endpoint",
        &["api", "ws", "sse", "console"],
    ),
    (
        "roomcast_origin_refusals_total",
        "endpoint",
        &["api", "ws", "sse"],
    ),
    ("roomcast_rate_limited_total", "endpoint", &["ws_publish"]),
    (
        "roomcast_connections_refused_total",
        "reason",
        &["instance_full", "user_limit"],
    ),
    (
        "roomcast_broker_commands_total",
        "op",
        &[
            "publish",
            "history",
            "reset_epoch",
            "presence",
            "membership",
        ],
    ),
    (
        "roomcast_presence_frames_total",
        "kind",
        &["snapshot", "diff"],
    ),
    (
        "roomcast_broker_errors_total",
        "op",
        &["publish", "history", "reset_epoch"],
    ),
    ("roomcast_tls_reloads_total", "result", &["ok", "failed"]),
    (
        "roomcast_fanin_dropped_total",
        "queue",
        &["events", "rooms", "pubsub_pushes", "shard_pushes"],
    ),
];

/// The bounded fan-in queues (see `broker::event_channel` and `room::inbox`).
const FANIN_QUEUES: &[&str] = &["events", "rooms"];

/// Counters without labels.
const COUNTERS: &[&str] = &[
    "roomcast_connection_failures_total",
    "roomcast_handshake_timeouts_total",
    "roomcast_tls_handshake_failures_total",
    "roomcast_room_failures_total",
    "roomcast_room_restarts_total",
    "roomcast_slow_consumer_disconnects_total",
    "roomcast_messages_delivered_total",
    "roomcast_replayed_messages_total",
    "roomcast_broker_replays_total",
    "roomcast_gap_fills_total",
    "roomcast_broker_messages_received_total",
    "roomcast_broker_reconnects_total",
    "roomcast_broker_pubsub_connects_total",
    "roomcast_broker_probe_failures_total",
    "roomcast_broker_subscriptions_dropped_total",
    "roomcast_broker_topology_changes_total",
    "roomcast_broker_circuit_opened_total",
    "roomcast_broker_fast_failures_total",
    "roomcast_broker_publish_calls_total",
    "roomcast_outbox_published_total",
    "roomcast_audit_retention_deleted_total",
    "roomcast_http_rate_limited_total",
    "roomcast_tokens_expired_total",
    "roomcast_reconnect_hints_total",
    "roomcast_rebalance_shed_total",
    "roomcast_inflate_refused_total",
];

/// Gauges a dashboard reads from the start, before anything happened.
const GAUGES: &[&str] = &[
    "roomcast_subscriptions",
    "roomcast_rooms_active",
    "roomcast_draining",
    "roomcast_broker_circuits_open",
];

/// The `transport` label of the connection metrics (see [`crate::transport`]).
const TRANSPORTS: [&str; 2] = ["websocket", "sse"];

/// Creates every counter series (and the state gauges) at 0, so that dashboards show 0
/// rather than "no data" and `increase()` alerts fire on the very first event.
fn register_at_zero() {
    for (name, label, values) in LABELLED_COUNTERS {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for code in crate::protocol::ErrorCode::ALL {
        metrics::counter!("roomcast_protocol_errors_total", "code" => code.name()).increment(0);
    }
    let close_reasons = crate::protocol::CloseCode::ALL.map(|code| code.reason());
    for transport in TRANSPORTS {
        for reason in close_reasons.iter().chain(&["client_closed", "gone"]) {
            metrics::counter!(
                "roomcast_connections_closed_total",
                "reason" => *reason,
                "transport" => transport
            )
            .increment(0);
        }
        for encoding in ["json", "msgpack"] {
            metrics::counter!(
                "roomcast_connections_opened_total",
                "encoding" => encoding,
                "transport" => transport
            )
            .increment(0);
        }
        metrics::gauge!("roomcast_connections", "transport" => transport).increment(0.0);
    }
    for name in COUNTERS {
        metrics::counter!(*name).increment(0);
    }
    for name in GAUGES {
        metrics::gauge!(*name).increment(0.0);
    }
    for queue in FANIN_QUEUES {
        metrics::gauge!("roomcast_fanin_queue_depth", "queue" => *queue).increment(0.0);
        metrics::gauge!("roomcast_fanin_queue_peak", "queue" => *queue).increment(0.0);
    }
}

/// The HTTP method as a metrics label: one of the standard methods, else `other`, so
/// that a client cannot create series at will.
pub fn method_label(method: &hyper::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// The current metrics in the Prometheus text format.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// The description of every metric family, one statement each, grouped as
/// docs/operations.md lists them: a table, longer than ~60 lines on purpose (split, it
/// would scatter the one list an operator reads).
fn describe() {
    describe_gauge!(
        "roomcast_build_info",
        "Build information of the running binary (always 1)."
    );
    // Connections and rooms.
    describe_gauge!(
        "roomcast_connections",
        "Open client connections, by transport (websocket, sse)."
    );
    describe_counter!(
        "roomcast_connections_opened_total",
        "Client connections opened, by encoding and transport."
    );
    describe_counter!(
        "roomcast_connections_closed_total",
        "Client connections closed, by reason and transport."
    );
    describe_counter!(
        "roomcast_connection_failures_total",
        "Connection actors that failed (panicked)."
    );
    describe_counter!(
        "roomcast_handshake_timeouts_total",
        "Connections closed for not completing their request (or TLS handshake) in time."
    );
    describe_counter!(
        "roomcast_tls_handshake_failures_total",
        "TLS handshakes on the listener that failed (plain HTTP on the TLS port, untrusted or outdated clients)."
    );
    describe_counter!(
        "roomcast_tls_reloads_total",
        "Reloads of the listener's certificate on SIGHUP, by result."
    );
    describe_counter!(
        "roomcast_rebalance_shed_total",
        "Connections this instance moved to emptier instances (rebalancing)."
    );
    describe_counter!(
        "roomcast_reconnect_hints_total",
        "Reconnect frames (drain, rebalancing) that named other instances to go to."
    );
    describe_gauge!(
        "roomcast_cluster_members",
        "Instances of the cluster this instance sees, by state (starting, ready, draining)."
    );
    describe_gauge!(
        "roomcast_subscriptions",
        "Room subscriptions of local connections."
    );
    describe_gauge!(
        "roomcast_rooms_active",
        "Rooms with a running actor on this instance."
    );
    describe_counter!(
        "roomcast_presence_frames_total",
        "Presence frames queued to clients that asked for events: `snapshot` (one per subscribe) and `diff` (at most one per room and presence window)."
    );
    describe_counter!(
        "roomcast_room_failures_total",
        "Room actors that failed (panicked)."
    );
    describe_counter!(
        "roomcast_room_restarts_total",
        "Room actors restarted with their subscribers."
    );
    describe_counter!(
        "roomcast_protocol_errors_total",
        "Client requests refused, by error code."
    );
    describe_counter!(
        "roomcast_slow_consumer_disconnects_total",
        "Clients closed with 4000 because their queue was full."
    );
    describe_gauge!(
        "roomcast_draining",
        "1 while this instance drains its connections, else 0."
    );
    // Messages.
    describe_counter!(
        "roomcast_messages_published_total",
        "Publishes handled, by result (ok, duplicate, error)."
    );
    describe_counter!(
        "roomcast_messages_delivered_total",
        "Message frames queued to subscribers."
    );
    describe_histogram!(
        "roomcast_delivery_latency_seconds",
        Unit::Seconds,
        "Time from a message's sequencing to its fan-out on this instance."
    );
    describe_counter!(
        "roomcast_resumes_total",
        "Subscribes, by outcome (fresh, recovered, lost)."
    );
    describe_counter!(
        "roomcast_replayed_messages_total",
        "Messages replayed to resuming subscribers."
    );
    describe_counter!(
        "roomcast_broker_replays_total",
        "Replays served from the broker because the room cache did not reach back."
    );
    describe_counter!(
        "roomcast_gap_fills_total",
        "Gaps in a room's sequence filled from the replay buffer."
    );
    describe_gauge!(
        "roomcast_fanin_queue_depth",
        "Publications waiting on their way from the broker to room actors: `events` between the broker and the dispatcher, `rooms` in room actors' mailboxes (all rooms together)."
    );
    describe_gauge!(
        "roomcast_fanin_queue_peak",
        "Highest depth seen since start: of the `events` queue, and of any one room's mailbox (`rooms`, at most rooms.queue_size)."
    );
    describe_counter!(
        "roomcast_fanin_dropped_total",
        "Publications dropped at a full fan-in queue, by queue (`pubsub_pushes`: the Redis Pub/Sub connection's queue, `shard_pushes`: a Redis Cluster master's); each one's room then fills from the replay buffer."
    );
    describe_counter!(
        "roomcast_room_resets_total",
        "Continuity losses announced to subscribers, by reason."
    );
    // Broker.
    describe_counter!(
        "roomcast_broker_commands_total",
        "Broker commands sent, by operation."
    );
    describe_counter!(
        "roomcast_broker_publish_calls_total",
        "Redis function calls that carried publications (several publishes waiting together share one)."
    );
    describe_counter!(
        "roomcast_broker_errors_total",
        "Broker commands that failed, by operation."
    );
    describe_counter!(
        "roomcast_broker_messages_received_total",
        "Publications received from the broker's fan-out."
    );
    describe_counter!(
        "roomcast_broker_reconnects_total",
        "Reconnections of the broker's Pub/Sub connection."
    );
    describe_counter!(
        "roomcast_broker_pubsub_connects_total",
        "Pub/Sub connections established."
    );
    describe_counter!(
        "roomcast_broker_probe_failures_total",
        "Pub/Sub liveness probes that did not come back in time."
    );
    describe_counter!(
        "roomcast_broker_subscriptions_dropped_total",
        "Sharded subscriptions Redis dropped because their slot changed owner."
    );
    describe_counter!(
        "roomcast_broker_topology_changes_total",
        "Changes of the Redis Cluster slot map, or of the master named by the Redis sentinels, seen by this instance."
    );
    describe_gauge!(
        "roomcast_broker_pubsub_up",
        "1 while the Pub/Sub connection delivers probes, else 0."
    );
    describe_gauge!(
        "roomcast_broker_commands_up",
        "1 while broker commands succeed, else 0."
    );
    describe_counter!(
        "roomcast_broker_circuit_opened_total",
        "Times a Redis node's circuit opened (its commands then fail fast)."
    );
    describe_counter!(
        "roomcast_broker_fast_failures_total",
        "Broker operations refused at once because their node's circuit was open (each publication of a refused call counts)."
    );
    describe_gauge!(
        "roomcast_broker_circuits_open",
        "Redis nodes whose circuit is open or on trial."
    );
    describe_histogram!(
        "roomcast_broker_pubsub_lag_seconds",
        Unit::Seconds,
        "Time from a message's sequencing in Redis to its arrival over Pub/Sub here (includes clock skew between Redis and this host)."
    );
    // Sidecar.
    describe_gauge!(
        "roomcast_outbox_backlog",
        "Outbox events not yet published."
    );
    describe_gauge!(
        "roomcast_outbox_oldest_pending_seconds",
        Unit::Seconds,
        "Age of the oldest unpublished outbox event."
    );
    describe_counter!(
        "roomcast_outbox_published_total",
        "Outbox events published to every room."
    );
    describe_histogram!(
        "roomcast_outbox_relay_lag_seconds",
        Unit::Seconds,
        "Time from a change's commit to the publish of its event."
    );
    describe_counter!(
        "roomcast_audit_retention_deleted_total",
        "Audit entries deleted by the retention job."
    );
    describe_counter!(
        "roomcast_http_requests_total",
        "HTTP requests, by route, method and status."
    );
    describe_histogram!(
        "roomcast_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request handling time, by route."
    );
    describe_counter!(
        "roomcast_http_rate_limited_total",
        "HTTP requests refused with 429."
    );
    describe_counter!(
        "roomcast_auth_failures_total",
        "Requests refused for missing or invalid credentials, by endpoint."
    );
    describe_counter!(
        "roomcast_inflate_refused_total",
        "Compressed publishes refused because their data would inflate past the frame limit (code 109)."
    );
    describe_counter!(
        "roomcast_auth_failures_throttled_total",
        "Failed authentications answered 429: the client address spent its budget of failed attempts, by endpoint."
    );
    describe_counter!(
        "roomcast_origin_refusals_total",
        "Browser requests refused for their Origin, by endpoint."
    );
    describe_counter!(
        "roomcast_rate_limited_total",
        "WebSocket requests refused by a rate limit, by endpoint."
    );
    describe_counter!(
        "roomcast_connections_refused_total",
        "WebSocket upgrades refused by a connection cap, by reason."
    );
    describe_counter!(
        "roomcast_tokens_expired_total",
        "Connections closed with 4101 because their token expired."
    );
    describe_gauge!(
        "roomcast_feature_flag_rollout_percent",
        "Rollout percentage of each feature flag."
    );
    describe_counter!(
        "roomcast_feature_flag_evaluations_total",
        "Feature flag evaluations, by flag and answer."
    );
}
