//! The server: wires broker, rooms and connections together behind one listener that
//! serves both HTTP routes and the WebSocket endpoint, and shuts them down in order.

mod checks;
pub mod console;
mod http;
mod origin;
mod tls;
mod websocket;

pub use checks::{check_config, load_config};
pub use http::{Body, BoxError, empty, full, json_error, json_response};

use crate::api::Api;
use crate::auth::{AuthConfigError, Authenticator};
use crate::broker::{Broker, BrokerError, EventReceiver};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connection::{ConnectionContext, Connections};
use crate::flags::{Flags, FlagsError};
use crate::protocol::CloseCode;
use crate::room::{RestartPolicy, RoomSettings, Rooms};
use crate::store::{Store, StoreError};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tls::ListenerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the HTTP routes need.
pub struct App {
    /// This instance's name.
    pub node_id: String,
    /// When the server started.
    pub started: Instant,
    /// The connections.
    pub connections: Connections,
    /// The rooms.
    pub rooms: Rooms,
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// The HTTP API (issue tracker, audit, publish, history).
    pub api: Arc<Api>,
    /// Credentials for the API and the WebSocket endpoint.
    pub auth: Arc<Authenticator>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::config::TrustedProxies,
    /// Browser origins allowed to call the HTTP API.
    pub cors: crate::config::CorsConfig,
    /// Browser origins allowed to open WebSockets (besides this server's own).
    pub ws_origins: crate::config::OriginList,
    /// Whether `/metrics` is served here (else on its own listener).
    pub metrics_on_main_listener: bool,
    /// Set while the instance drains: not ready, no new connections.
    pub draining: AtomicBool,
    /// Cancelled to ask for a drain (the admin endpoints; the binary also drains on
    /// SIGTERM).
    pub drain_requested: CancellationToken,
    /// The web console's files, when `console.enabled`.
    pub console: Option<console::Console>,
    /// This instance's membership in the cluster.
    pub cluster: Arc<Cluster>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker could not be set up.
    #[error("cannot set up the broker: {0}")]
    Broker(#[source] BrokerError),
    /// The database could not be opened or migrated.
    #[error("cannot open the database: {0}")]
    Store(#[source] StoreError),
    /// The feature flags file cannot be used.
    #[error("invalid feature flags: {0}")]
    Flags(#[source] FlagsError),
    /// The authentication settings cannot be used.
    #[error("invalid authentication settings: {0}")]
    Auth(#[source] AuthConfigError),
    /// The listener's certificate or key cannot be used.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    /// An actor system part failed to start.
    #[error("cannot start {what}: {source}")]
    Actors {
        /// Which part.
        what: &'static str,
        /// Why.
        #[source]
        source: ractor::SpawnErr,
    },
}

/// The room supervisor, with the room settings and restart policy of `config`.
async fn start_rooms(
    config: &Config,
    broker: Arc<dyn Broker>,
    events_rx: EventReceiver,
) -> Result<Rooms, ServerError> {
    let restarts = RestartPolicy {
        max_restarts: config.rooms.max_restarts,
        window: Duration::from_millis(config.rooms.restart_window_ms),
    };
    Rooms::start(broker, events_rx, room_settings(config), restarts)
        .await
        .map_err(|source| ServerError::Actors {
            what: "the room supervisor",
            source,
        })
}

/// The token checks of `config`; says loudly in the log when there are none.
fn authenticator(config: &Config) -> Result<Arc<Authenticator>, ServerError> {
    let auth = Arc::new(Authenticator::from_config(&config.auth).map_err(ServerError::Auth)?);
    if auth.is_open() {
        tracing::warn!(
            listen = %config.listen,
            mode = ?config.auth.mode,
            "NO AUTHENTICATION CONFIGURED: every client is anonymous and may read, write and publish anything; \
             set [auth] keys before exposing this server (see docs/security.md)"
        );
    }
    Ok(auth)
}

/// The main listener, and the address it is bound to (the port is known with port 0).
fn bind_main(config: &Config) -> Result<(TcpListener, SocketAddr), ServerError> {
    let failed = |source| ServerError::Bind {
        addr: config.listen,
        source,
    };
    let listener = bind(config.listen, config.connection.listen_backlog).map_err(failed)?;
    let local_addr = listener.local_addr().map_err(failed)?;
    Ok((listener, local_addr))
}

/// `/metrics` on a listener of its own, when `metrics.listen` names one.
fn spawn_metrics_listener(config: &Config) -> Result<(), ServerError> {
    if config.metrics.listen.is_empty() {
        return Ok(());
    }
    let addr: SocketAddr = config.metrics.listen.parse().expect("validated");
    let listener = bind(addr, config.connection.listen_backlog)
        .map_err(|source| ServerError::Bind { addr, source })?;
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(serve_metrics(listener));
    Ok(())
}

/// The listener's certificate when `[tls]` is configured, reloaded on SIGHUP.
fn listener_tls(config: &Config) -> Result<Option<Arc<ListenerTls>>, ServerError> {
    let tls = ListenerTls::from_config(&config.tls)
        .map_err(|e| ServerError::Tls(format!("{}: {}", e.key, e.message)))?
        .map(Arc::new);
    if let Some(tls) = &tls {
        tls.reload_on_hangup();
    }
    Ok(tls)
}

/// Accepts on `listener` until the returned token is cancelled; says so in the log.
fn spawn_accept(
    config: &Config,
    (listener, addr): (TcpListener, SocketAddr),
    app: &Arc<App>,
    tls: Option<Arc<ListenerTls>>,
) -> (CancellationToken, JoinHandle<()>) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let options = SocketOptions {
        handshake_timeout: config.connection.handshake_timeout(),
        send_buffer_bytes: config.connection.send_buffer_bytes,
        tls,
    };
    let stop_accepting = CancellationToken::new();
    let accept_loop = tokio::spawn(accept(
        listener,
        app.clone(),
        options,
        stop_accepting.clone(),
    ));
    tracing::info!(%addr, scheme, node = %app.node_id, broker = app.broker.kind(), "roomcast listening");
    (stop_accepting, accept_loop)
}

/// A running server.
pub struct Server {
    app: Arc<App>,
    local_addr: SocketAddr,
    stop_accepting: CancellationToken,
    accept_loop: Option<JoinHandle<()>>,
    relay: JoinHandle<()>,
    control: JoinHandle<()>,
    announcer: JoinHandle<()>,
    rebalancer: Option<JoinHandle<()>>,
    /// Stops the background tasks (outbox relay, control listener, announcer).
    relay_stop: CancellationToken,
}

impl Server {
    /// Builds every part from `config`, binds the listener and starts accepting.
    pub async fn start(config: &Config) -> Result<Server, ServerError> {
        let mut config = config.clone();
        config.node_id = node_id(&config);
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let broker = crate::broker::from_config(&config, &config.node_id, events_tx)
            .map_err(ServerError::Broker)?;
        Self::start_with_broker(&config, broker, events_rx).await
    }

    /// Like [`Server::start`], with a broker built by the caller (embedding, tests):
    /// `events_rx` must receive the events that broker sends.
    ///
    /// Start-up in order, one step per statement: longer than ~60 lines on purpose, as
    /// the order is the contract (everything a request may reach exists before the
    /// listener accepts, and a failure stops start-up before it binds what follows).
    pub async fn start_with_broker(
        config: &Config,
        broker: Arc<dyn Broker>,
        events_rx: EventReceiver,
    ) -> Result<Server, ServerError> {
        let node_id = node_id(config);
        crate::telemetry::metrics::install();
        let rooms = start_rooms(config, broker.clone(), events_rx).await?;
        let flags = Flags::from_config(&config.flags).map_err(ServerError::Flags)?;
        flags.watch(Duration::from_secs(2));
        let auth = authenticator(config)?;
        let store = Store::connect(&config.database_url)
            .await
            .map_err(ServerError::Store)?;
        let context = Arc::new(ConnectionContext::new(
            config,
            node_id.clone(),
            rooms.clone(),
            broker.clone(),
            flags,
            auth.clone(),
            Arc::new(crate::access::AccessControl::new(store.clone())),
        ));
        let (listener, local_addr) = bind_main(config)?;
        let cluster = Cluster::new(
            &config.cluster,
            &node_id,
            local_addr,
            config.tls.enabled(),
            broker.clone(),
        );
        let api = Api::new(
            config,
            store.clone(),
            auth.clone(),
            context.clone(),
            cluster.clone(),
        );
        let relay_stop = CancellationToken::new();
        let relay =
            crate::relay::spawn_relay(store.clone(), context.publisher.clone(), relay_stop.clone());
        crate::api::spawn_maintenance(store, config.audit.clone());
        let connections = Connections::start(context, config.connection.max_frame_bytes)
            .await
            .map_err(|source| ServerError::Actors {
                what: "the connection supervisor",
                source,
            })?;
        let app = Arc::new(App {
            node_id,
            started: Instant::now(),
            connections,
            rooms,
            broker,
            api,
            auth,
            trusted_proxies: config.trusted_proxies.clone(),
            cors: config.cors.clone(),
            ws_origins: config.websocket.allowed_origins.clone(),
            metrics_on_main_listener: config.metrics.listen.is_empty(),
            draining: AtomicBool::new(false),
            drain_requested: cluster.drain_requested(),
            cluster: cluster.clone(),
            console: config.console.enabled.then(console::Console::new),
        });
        spawn_metrics_listener(config)?;
        let control = crate::control::spawn_listener(
            app.rooms.clone(),
            app.connections.clone(),
            app.api.access.clone(),
            cluster.clone(),
            relay_stop.clone(),
        );
        let announcer = cluster.spawn_announcer(
            app.connections.clone(),
            app.rooms.clone(),
            relay_stop.clone(),
        );
        let rebalancer = cluster.spawn_rebalancer(app.connections.clone(), relay_stop.clone());
        let tls = listener_tls(config)?;
        let (stop_accepting, accept_loop) = spawn_accept(config, (listener, local_addr), &app, tls);
        Ok(Server {
            app,
            local_addr,
            stop_accepting,
            accept_loop: Some(accept_loop),
            relay,
            control,
            announcer,
            rebalancer,
            relay_stop,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This instance's name.
    pub fn node_id(&self) -> &str {
        &self.app.node_id
    }

    /// The rooms of this instance.
    pub fn rooms(&self) -> &Rooms {
        &self.app.rooms
    }

    /// The connections of this instance.
    pub fn connections(&self) -> &Connections {
        &self.app.connections
    }

    /// The issue tracker's store.
    pub fn store(&self) -> &Store {
        &self.app.api.store
    }

    async fn stop_accepting(&mut self) {
        self.stop_accepting.cancel();
        if let Some(accept_loop) = self.accept_loop.take() {
            let _ = accept_loop.await;
        }
    }

    /// This instance's membership in the cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.app.cluster
    }

    /// Cancelled when someone asked for a drain through `POST /admin/drain` or
    /// `POST /api/v1/admin/drain`.
    pub fn drain_requested(&self) -> CancellationToken {
        self.app.drain_requested.clone()
    }

    /// Drains the instance for a deploy: not ready, no new WebSocket connections, every client told
    /// to reconnect elsewhere (spread over `window`) and closed with 1012 after what was
    /// queued to it, the outbox published; everything within `deadline`, after which
    /// whatever is left is closed with 1001. Returns true when the drain completed in time.
    pub async fn drain(self, window: Duration, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let drain_began = crate::store::now_ms();
        self.app.draining.store(true, Ordering::SeqCst);
        self.app.cluster.set_draining();
        metrics::gauge!("roomcast_draining").set(1.0);
        tracing::info!(?window, ?deadline, "draining");
        // The listener stays open meanwhile: health checks see 503 (not a refused
        // connection), HTTP requests are still served, and new WebSocket upgrades are
        // refused with 503 so clients go to another instance.
        let connections = self.app.connections.clone();
        let store = self.app.api.store.clone();
        let completed = tokio::time::timeout_at(until, async {
            let cluster = self.app.cluster.clone();
            connections.drain(window, move || cluster.hint()).await;
            while connections.count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // What was committed before the drain began is broadcast before the
            // instance goes (by any instance's relay). Rows other instances keep writing
            // meanwhile are theirs to relay: waiting for an empty shared outbox could
            // last until the deadline on a busy cluster.
            while !matches!(store.outbox_pending_before(drain_began).await, Ok(0)) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok();
        if !completed {
            tracing::warn!(
                left = connections.count(),
                "drain deadline reached; closing the remaining connections"
            );
        }
        self.shutdown(Duration::from_secs(1)).await;
        completed
    }

    /// Stops accepting, closes every connection with 1001 and waits up to `deadline` for
    /// them to finish, then stops the actors.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.stop_accepting().await;
        let connections = &self.app.connections;
        connections.close_all(CloseCode::GoingAway);
        let until = tokio::time::Instant::now() + deadline;
        while connections.count() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // This instance's presence entries go now, not when they expire.
        self.app.api.context.presence.shutdown().await;
        self.relay_stop.cancel();
        let _ = self.relay.await;
        let _ = self.control.await;
        let _ = self.announcer.await;
        if let Some(rebalancer) = self.rebalancer {
            let _ = rebalancer.await;
        }
        // The others stop listing this instance now, not when its record expires.
        self.app.cluster.leave().await;
        connections.stop();
        self.app.rooms.stop();
        tracing::info!("roomcast stopped");
    }
}

/// The configured instance name, or a random one.
/// Binds a listener with an explicit backlog (tokio's `TcpListener::bind` uses 1024,
/// too short for the reconnect storm after another instance dies).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do: a restarted instance can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

fn node_id(config: &Config) -> String {
    if config.node_id.is_empty() {
        format!("{:08x}", rand::random::<u32>())
    } else {
        config.node_id.clone()
    }
}

fn room_settings(config: &Config) -> RoomSettings {
    RoomSettings {
        cache_size: config.rooms.cache_size,
        cache_ttl_ms: config.history.ttl_secs * 1000,
        linger: Duration::from_millis(config.rooms.linger_ms),
        fill_retry: Duration::from_millis(250),
        max_pending: config.history.size,
    }
}

/// Per-socket settings applied at accept.
#[derive(Clone)]
struct SocketOptions {
    handshake_timeout: Duration,
    send_buffer_bytes: usize,
    /// TLS on the listener, when configured.
    tls: Option<Arc<ListenerTls>>,
}

async fn accept(
    listener: TcpListener,
    app: Arc<App>,
    options: SocketOptions,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tokio::spawn(serve_http(stream, app.clone(), options.clone()));
            }
            Err(err) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP on one TCP connection (after the TLS handshake when the listener has TLS).
/// A WebSocket upgrade ends this future and the socket continues in the connection's own
/// task.
async fn serve_http(stream: TcpStream, app: Arc<App>, options: SocketOptions) {
    let _ = stream.set_nodelay(true);
    if options.send_buffer_bytes > 0 {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(options.send_buffer_bytes);
    }
    let peer = stream
        .peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let Some(tls) = &options.tls else {
        return serve_io(TokioIo::new(stream), app, peer, options.handshake_timeout).await;
    };
    // The handshake shares the request's time budget: a client that opens a socket and
    // says nothing is dropped as on plain TCP.
    match tokio::time::timeout(options.handshake_timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            serve_io(TokioIo::new(stream), app, peer, options.handshake_timeout).await
        }
        Ok(Err(err)) => {
            metrics::counter!("roomcast_tls_handshake_failures_total").increment(1);
            tracing::debug!(error = %err, %peer, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("roomcast_handshake_timeouts_total").increment(1);
            tracing::debug!(%peer, "client did not complete the TLS handshake in time");
        }
    }
}

/// Serves HTTP/1.1 over one client stream, plain or TLS.
async fn serve_io<I>(
    io: TokioIo<I>,
    app: Arc<App>,
    peer: std::net::IpAddr,
    handshake_timeout: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| http::route(request, app.clone(), peer));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(err) = connection.await {
        if err.is_timeout() {
            metrics::counter!("roomcast_handshake_timeouts_total").increment(1);
            tracing::debug!("client did not complete its request in time");
        } else {
            tracing::debug!(error = %err, "HTTP connection error");
        }
    }
}

/// A listener that serves only `GET /metrics` (when `metrics.listen` is set).
async fn serve_metrics(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let response = if request.uri().path() == "/metrics" {
                        http::metrics()
                    } else {
                        json_error(
                            hyper::StatusCode::NOT_FOUND,
                            "not_found",
                            "only /metrics is served here",
                        )
                    };
                    Ok::<_, std::convert::Infallible>(response)
                },
            );
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
