//! What operators rely on: `/metrics` in a format Prometheus accepts, readiness during a
//! drain, and the drain triggered over HTTP.

use crate::support::process::RoomcastProcess;
use crate::support::redis::free_port;
use crate::support::{TestClient, TestServer, http};
use roomcast::protocol::Encoding;
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Runs `promtool check metrics` on `text`; returns its exit status and output.
async fn promtool(text: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool must be installed (scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_the_server_and_pass_promtool() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut client = TestClient::connect(&server.url, Encoding::Json).await;
    client.subscribe("metered", None).await;
    client.publish("metered", json!(1), None).await;
    client.message().await;
    client
        .expect_error(
            roomcast::protocol::ClientFrame::Subscribe {
                id: Some(1),
                room: "bad room".into(),
                since: None,
                presence: false,
                info: None,
                delta: None,
                compress: None,
            },
            roomcast::protocol::ErrorCode::InvalidRoom,
        )
        .await;
    http::json(
        &addr,
        "POST",
        "/api/v1/issues",
        &[],
        &json!({"project_id": 1, "title": "m"}),
    )
    .await;
    http::get(&addr, "/api/v1/issues", &[]).await;

    let scraped = http::get(&addr, "/metrics", &[]).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scraped.text();
    for name in [
        "roomcast_build_info",
        "roomcast_connections",
        "roomcast_subscriptions",
        "roomcast_rooms_active",
        "roomcast_messages_published_total",
        "roomcast_messages_delivered_total",
        "roomcast_delivery_latency_seconds_bucket",
        "roomcast_resumes_total",
        "roomcast_protocol_errors_total{code=\"invalid_room\"}",
        "roomcast_http_requests_total",
        "roomcast_http_request_duration_seconds_bucket",
        "roomcast_outbox_backlog",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let (ok, output) = promtool(&text).await;
    assert!(ok, "promtool check metrics failed:\n{output}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = TestServer::with(|c| c.metrics.listen = listen.clone()).await;
    assert_eq!(
        http::get(&server.addr(), "/metrics", &[]).await.status,
        404,
        "not on the public port"
    );
    let scraped = http::get(&listen, "/metrics", &[]).await;
    assert_eq!(scraped.status, 200);
    assert!(scraped.text().contains("roomcast_build_info"));
    server.stop().await;
}

/// `POST /admin/drain` from loopback starts a drain: the instance turns not ready, keeps
/// serving its clients during the window, then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_drain_turns_the_instance_not_ready_and_ends_it() {
    let mut process = RoomcastProcess::start(&[
        ("ROOMCAST_DRAIN__WINDOW_MS", "3000"),
        ("ROOMCAST_DRAIN__DEADLINE_MS", "8000"),
    ])
    .await;
    // Two clients, so the drain window spreads them 1.5 s apart.
    let mut first = TestClient::connect(&process.url(), Encoding::Json).await;
    let _second = TestClient::connect(&process.url(), Encoding::Json).await;
    first.subscribe("r", None).await;
    let answer = http::send(&process.addr, "POST", "/admin/drain", &[], None).await;
    assert_eq!(answer.status, 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ready = http::get(&process.addr, "/readyz", &[]).await;
        if ready.status == 503 {
            assert_eq!(ready.json()["draining"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(process.wait(Duration::from_secs(15)).await, Some(0));
}

async fn welcome_features(url: &str) -> Vec<String> {
    let mut conn = roomcast::client::Connection::connect(url, Some(Encoding::Json))
        .await
        .unwrap();
    match conn.next_frame(crate::support::WAIT).await.unwrap() {
        roomcast::protocol::ServerFrame::Welcome { features, .. } => features,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// A flag's rollout changes at run time (SIGHUP re-reads the flags file), shows in
/// the welcome frame of new connections and in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_flags_change_without_a_restart() {
    let path = std::env::temp_dir().join(format!("roomcast-flags-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "coalesce_writes = 0\n").unwrap();
    let file = path.display().to_string();
    let process = RoomcastProcess::start(&[("ROOMCAST_FLAGS__FILE", file.as_str())]).await;
    assert!(welcome_features(&process.url()).await.is_empty());

    std::fs::write(&path, "coalesce_writes = 100\n").unwrap();
    process.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while welcome_features(&process.url()).await != vec!["coalesce_writes".to_owned()] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flag never turned on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http::get(&process.addr, "/metrics", &[]).await.text();
    assert!(
        metrics.contains("roomcast_feature_flag_rollout_percent{flag=\"coalesce_writes\"} 100"),
        "{metrics}"
    );
    // A connection with the flag works as any other.
    let mut client = TestClient::connect(&process.url(), Encoding::MsgPack).await;
    client.subscribe("flagged", None).await;
    client.publish("flagged", json!("x"), None).await;
    client.message().await;
    let _ = std::fs::remove_file(path);
}

fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

async fn promtool_on(args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("promtool must be installed (scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The alert rules and the Prometheus configuration in deploy/ are valid, the rules'
/// unit tests pass, and every metric the rules and the dashboard use is one roomcast
/// exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_monitoring_assets_are_valid_and_use_real_metrics() {
    for args in [
        &["check", "rules", "deploy/prometheus/alerts.yml"][..],
        &["test", "rules", "deploy/prometheus/alerts.test.yml"][..],
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
    ] {
        let (ok, output) = promtool_on(args).await;
        assert!(ok, "promtool {args:?} failed:\n{output}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/roomcast.json"))
            .expect("the dashboard is JSON");
    assert!(!dashboard["panels"].as_array().unwrap().is_empty());

    let described = repo_file("src/telemetry/metrics.rs");
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/dashboards/roomcast.json",
    ] {
        for name in metric_names(&repo_file(file)) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                described.contains(&format!("\"{base}\"")),
                "{file} uses {name}, which roomcast does not export"
            );
        }
    }
}

/// Every `roomcast_…` identifier in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("roomcast_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // `roomcast_broker_*` in a comment names a family, not a metric.
        if !tail[..end].ends_with('_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

/// `${NAME:-default}` as compose reads it when `NAME` is unset.
fn compose_default(value: &str) -> String {
    match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((_, default)) => default.to_owned(),
        None => value.to_owned(),
    }
}

/// The string entries of a YAML map.
fn yaml_env(map: &yaml_rust2::Yaml) -> Vec<(String, String)> {
    map.as_hash()
        .expect("a map")
        .iter()
        .filter_map(|(key, value)| {
            let value = match value {
                yaml_rust2::Yaml::String(s) => s.clone(),
                yaml_rust2::Yaml::Integer(i) => i.to_string(),
                _ => return None,
            };
            Some((key.as_str()?.to_owned(), compose_default(&value)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_deploy_configurations_pass_the_configuration_check() {
    use yaml_rust2::YamlLoader;
    let compose = &YamlLoader::load_from_str(&repo_file("deploy/compose.yaml")).unwrap()[0];
    let configmap = &YamlLoader::load_from_str(&repo_file("deploy/k8s/configmap.yaml")).unwrap()[0];
    let secret =
        &YamlLoader::load_from_str(&repo_file("deploy/k8s/secret.example.yaml")).unwrap()[0];
    let mut k8s = yaml_env(&configmap["data"]);
    k8s.extend(yaml_env(&secret["stringData"]));
    for (name, env) in [
        ("compose", yaml_env(&compose["x-roomcast"]["environment"])),
        ("kubernetes", k8s),
    ] {
        // Listening on every interface, both must run with authentication on.
        assert!(
            env.iter()
                .any(|(k, v)| k == "ROOMCAST_AUTH__JWT_HS256_SECRET" && !v.is_empty()),
            "{name}: no authentication"
        );
        let env: Vec<(&str, &str)> = env
            .iter()
            .filter(|(k, _)| k != "ROOMCAST_FLAGS__FILE")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (code, stderr) = crate::support::process::run_to_exit(&["--check-config"], &env).await;
        assert_eq!(code, Some(0), "{name}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_exists_at_zero_from_start_and_methods_are_bounded() {
    // A process of its own: in this test binary the recorder is shared by every server.
    let process = crate::support::process::RoomcastProcess::start(&[]).await;
    let text = http::get(&process.addr, "/metrics", &[]).await.text();
    for series in [
        "roomcast_slow_consumer_disconnects_total 0",
        "roomcast_gap_fills_total 0",
        "roomcast_room_failures_total 0",
        "roomcast_broker_fast_failures_total 0",
        "roomcast_protocol_errors_total{code=\"rate_limited\"} 0",
        "roomcast_connections_closed_total{reason=\"token_expired\",transport=\"websocket\"} 0",
        "roomcast_connections_closed_total{reason=\"gone\",transport=\"sse\"} 0",
        "roomcast_connections_opened_total{encoding=\"json\",transport=\"sse\"} 0",
        "roomcast_connections{transport=\"sse\"} 0",
        "roomcast_resumes_total{result=\"lost\"} 0",
        "roomcast_messages_published_total{result=\"error\"} 0",
        "roomcast_auth_failures_total{endpoint=\"ws\"} 0",
        "roomcast_auth_failures_total{endpoint=\"sse\"} 0",
    ] {
        assert!(
            text.contains(series),
            "{series} missing from a fresh /metrics"
        );
    }
    let (ok, output) = promtool(&text).await;
    assert!(ok, "promtool check metrics failed:\n{output}");

    // A client cannot create series with made-up methods.
    for method in ["BREW", "PROPFIND"] {
        http::send(&process.addr, method, "/api/v1/issues", &[], None).await;
    }
    let text = http::get(&process.addr, "/metrics", &[]).await.text();
    assert!(
        text.contains("method=\"other\""),
        "unknown methods count as other"
    );
    assert!(!text.contains("BREW") && !text.contains("PROPFIND"));
}
