//! roomcast: a realtime messaging server.
//!
//! WebSocket clients subscribe to rooms; every message published to a room reaches every
//! subscriber in sequence order, exactly once, and a client that reconnects resumes from
//! the last position it saw. The modules, from the wire inwards:
//!
//! - [`protocol`]: frames, their JSON and MessagePack encodings, error and close codes.
//! - [`stream`]: the pure core — positions, replay buffer, idempotency window, recovery,
//!   and a room's delivery order as a state machine ([`stream::Follower`]).
//! - [`broker`]: sequencing, replay buffer and cross-instance fan-out behind one trait.
//! - [`room`]: one actor per room on this instance (the shell of its follower), under a
//!   supervisor.
//! - [`connection`]: one actor per WebSocket connection, its socket task and queue.
//! - [`presence`]: who is in a room, across instances; join/leave events.
//! - [`server`]: the listener (HTTP routes and the WebSocket upgrade) and start-up.
//! - [`config`]: layered, validated configuration; [`telemetry`]: logging.
//! - [`client`]: a Rust client with automatic reconnect and resume.
//! - [`tracker`], [`store`], [`api`]: the issue tracker's model, storage and HTTP API;
//!   [`access`]: who may do what with it and with its rooms (project membership).

pub mod access;
pub mod api;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod control;
pub mod flags;
pub mod outbound;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod relay;
pub mod response;
pub mod room;
pub mod server;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tracker;
pub mod transport;
