//! The Prometheus registry behind `GET /metrics`.
//!
//! Code records with the `metrics` macros where things happen; this module installs the
//! recorder once per process, describes every metric (HELP text and unit, checked by
//! `promtool check metrics` in the tests), and renders the text format.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

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
            metrics::gauge!("roomcast_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Gauges a dashboard reads from the start, before anything happened.
            for gauge in [
                "roomcast_connections",
                "roomcast_subscriptions",
                "roomcast_rooms_active",
                "roomcast_draining",
            ] {
                metrics::gauge!(gauge).increment(0.0);
            }
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

/// The current metrics in the Prometheus text format.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

fn describe() {
    describe_gauge!(
        "roomcast_build_info",
        "Build information of the running binary (always 1)."
    );
    // Connections and rooms.
    describe_gauge!("roomcast_connections", "Open WebSocket connections.");
    describe_counter!(
        "roomcast_connections_opened_total",
        "WebSocket connections opened, by encoding."
    );
    describe_counter!(
        "roomcast_connections_closed_total",
        "WebSocket connections closed, by reason."
    );
    describe_counter!(
        "roomcast_connection_failures_total",
        "Connection actors that failed (panicked)."
    );
    describe_counter!(
        "roomcast_handshake_timeouts_total",
        "Connections closed for not completing their request in time."
    );
    describe_counter!(
        "roomcast_connections_refused_total",
        "WebSocket upgrades refused by a connection cap, by reason."
    );
    describe_counter!(
        "roomcast_origin_refusals_total",
        "Browser requests refused for their Origin, by endpoint (ws, api)."
    );
    describe_counter!(
        "roomcast_tokens_expired_total",
        "Connections closed (4101) at their token's expiry without a refresh."
    );
    describe_counter!(
        "roomcast_rate_limited_total",
        "WebSocket publishes refused by a rate limit (error 203), by endpoint."
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
        "Changes of the Redis Cluster slot map seen by this instance."
    );
    describe_gauge!(
        "roomcast_broker_pubsub_up",
        "1 while the Pub/Sub connection delivers probes, else 0."
    );
    describe_gauge!(
        "roomcast_broker_commands_up",
        "1 while broker commands succeed, else 0."
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
    describe_gauge!(
        "roomcast_feature_flag_rollout_percent",
        "Rollout percentage of each feature flag."
    );
    describe_counter!(
        "roomcast_feature_flag_evaluations_total",
        "Feature flag evaluations, by flag and answer."
    );
}
