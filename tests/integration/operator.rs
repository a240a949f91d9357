//! The operator's first contact with the binary: configuration that cannot work is
//! refused by `--check-config` with a message that says what to write, `--help` and
//! `roomcast config` explain the layers, logs suit where they go, and a dependency that
//! cannot be reached is named with its address and the cause.

use crate::support::TestClient;
use crate::support::process::{RoomcastProcess, run_to_exit};
use roomcast::protocol::{ClientFrame, Encoding, ServerFrame};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn roomcast_output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("exits in time")
        .expect("runs")
}

/// Environment of a refused configuration, and what its message must contain.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_parse_but_cannot_work_are_refused_by_the_check() {
    let cases: &[Case] = &[
        (
            &[("ROOMCAST_LOG__LEVEL", "verbose")],
            &[
                "log.level",
                "verbose",
                "off, error, warn, info, debug, trace",
            ],
        ),
        (
            &[("ROOMCAST_REDIS_URL", "redis://")],
            &["redis_url", "host"],
        ),
        (
            &[("ROOMCAST_REDIS_URL", "redis://:hunter2@")],
            &["redis_url", "host"],
        ),
        (
            &[(
                "ROOMCAST_REDIS_URL",
                "redis-sentinel://:hunter2@10.0.0.1:26379",
            )],
            &["redis_url", "names no master", "redis-sentinel://"],
        ),
        (
            &[(
                "ROOMCAST_REDIS_URL",
                "redis-sentinel://a,b/main?sentinel_password=hunter2&timeout=5",
            )],
            &["redis_url", "unknown option \"timeout\""],
        ),
        (
            &[
                ("ROOMCAST_LISTEN", "127.0.0.1:18080"),
                ("ROOMCAST_METRICS__LISTEN", "0.0.0.0:18080"),
            ],
            &["metrics.listen", "port of its own"],
        ),
        (
            &[("ROOMCAST_LISTEN", "localhost:8080")],
            &["listen", "127.0.0.1:8080", "host names"],
        ),
        (
            &[("ROOMCAST_CONNECTION__MAX_ROOMS", "-3")],
            &["connection.max_rooms", "a whole number"],
        ),
    ];
    for (env, needles) in cases {
        let (code, stderr) = run_to_exit(&["--check-config"], env).await;
        assert_eq!(code, Some(64), "{env:?} passed the check: {stderr}");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{env:?}: no {needle:?} in {stderr}"
            );
        }
        assert!(
            !stderr.contains("usize") && !stderr.contains("hunter2"),
            "{stderr}"
        );
    }
    // A file's type error is worded the same way.
    let path = std::env::temp_dir().join(format!("roomcast-op-{}.toml", std::process::id()));
    std::fs::write(&path, "[rooms]\nlinger_ms = \"soon\"\n").unwrap();
    let (code, stderr) = run_to_exit(&["--check-config", "-c", path.to_str().unwrap()], &[]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("rooms.linger_ms") && stderr.contains("expected a whole number"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_config_explain_the_layers_without_showing_secrets() {
    let help = roomcast_output(&["--help"], &[]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "ROOMCAST_<SECTION>__<KEY>",
        "DATABASE_URL",
        "roomcast config",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }

    let output = roomcast_output(
        &["config"],
        &[
            (
                "ROOMCAST_AUTH__JWT_HS256_SECRET",
                "a-long-hs256-secret-for-the-test",
            ),
            (
                "ROOMCAST_AUTH__SERVICE_TOKENS",
                "relay:relay-token-0123456789",
            ),
            (
                "ROOMCAST_REDIS_URL",
                "redis://:redis-password@127.0.0.1:6379",
            ),
            ("ROOMCAST_DATABASE_URL", "postgres://app:db-password@db/rc"),
            ("ROOMCAST_HISTORY__SIZE", "4321"),
        ],
    )
    .await;
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for secret in [
        "a-long-hs256-secret",
        "relay-token",
        "redis-password",
        "db-password",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("size = 4321"), "{text}");
    assert!(text.contains("relay:<redacted>"), "{text}");

    let output = roomcast_output(&["config"], &[("ROOMCAST_LOG__LEVEL", "verbose")]).await;
    assert_eq!(
        output.status.code(),
        Some(64),
        "an invalid configuration is refused"
    );

    let output = roomcast_output(
        &["config", "--defaults"],
        &[("ROOMCAST_HISTORY__SIZE", "7")],
    )
    .await;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        roomcast::config::DEFAULT_TOML,
        "--defaults ignores the environment"
    );
}

/// Logs written to a pipe carry no colour codes, and `auto` (the default) writes JSON to
/// anything that is not a terminal. The run also shows an unreachable PostgreSQL named
/// with its address and the cause within seconds, not "pool timed out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_suit_a_pipe_and_an_unreachable_database_is_named() {
    let port = dead_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/test");
    for format in ["pretty", "auto"] {
        let started = Instant::now();
        let output = roomcast_output(
            &[],
            &[
                ("ROOMCAST_LISTEN", "127.0.0.1:0"),
                ("ROOMCAST_LOG__FORMAT", format),
                ("ROOMCAST_DATABASE_URL", &url),
            ],
        )
        .await;
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        assert!(
            !stdout.contains('\u{1b}'),
            "colour codes in a pipe:\n{stdout}"
        );
        let failure = stdout
            .lines()
            .find(|line| line.contains("cannot start"))
            .unwrap_or_else(|| panic!("no start failure logged:\n{stdout}"));
        assert!(
            failure.contains(&format!("127.0.0.1:{port}")) && failure.contains("refused"),
            "{failure}"
        );
        if format == "auto" {
            for line in stdout.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
        }
    }
}

/// While Redis is unreachable, the retry warnings say where the server tries to connect
/// (without the password), and a client's subscribe is refused with the broker's own
/// reason, never with the actor library's "Actor panicked during startup".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_named_and_clients_get_a_plain_error() {
    let port = dead_port();
    let url = format!("redis://:hunter2-password@127.0.0.1:{port}");
    let mut process = RoomcastProcess::start(&[("ROOMCAST_REDIS_URL", &url)]).await;
    let warning = process
        .wait_for_log("cannot connect to Redis yet", Duration::from_secs(10))
        .await;
    assert!(warning.contains(&format!("127.0.0.1:{port}")), "{warning}");
    assert!(!warning.contains("hunter2"), "{warning}");

    let mut client = TestClient::connect(&process.url(), Encoding::Json).await;
    client
        .send(ClientFrame::Subscribe {
            id: Some(1),
            room: "lobby".into(),
            since: None,
            presence: false,
            info: None,
            delta: None,
            compress: None,
        })
        .await;
    loop {
        match client.next().await {
            ServerFrame::Error { message, .. } => {
                assert!(!message.contains("panicked"), "{message}");
                assert!(!message.contains("hunter2"), "{message}");
                assert!(
                    message.contains("Redis") || message.contains("broker"),
                    "{message}"
                );
                break;
            }
            ServerFrame::Welcome { .. } => continue,
            other => panic!("expected an error, got {other:?}"),
        }
    }
    process.signal("KILL");
    process.wait(Duration::from_secs(10)).await;
}
