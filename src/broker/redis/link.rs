//! The command connection to Redis, one node or a cluster, established in the background
//! so that an instance starts (not ready) while Redis is unreachable and becomes ready
//! when it can reach it. After the first connection, the redis crate's connection
//! manager (one node) or cluster connection reconnects by itself; every command has a
//! response timeout, so nothing waits long on a Redis that stopped answering.

use super::RedisSettings;
use crate::broker::BrokerError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisFuture, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// One Redis (boxed: a client with TLS settings is large).
    Single(Box<redis::Client>),
    /// A Redis Cluster, by its seed nodes (Pub/Sub has connections of its own).
    Cluster(Vec<String>),
}

/// A live command connection. Cheap to clone (both kinds are handles).
#[derive(Clone)]
pub enum Connection {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The current command connection, if established yet.
#[derive(Clone, Default)]
pub struct Link {
    current: Arc<RwLock<Option<Connection>>>,
}

impl Link {
    /// A handle that keeps trying to connect to `target` until it succeeds.
    pub fn connect(target: Target, settings: RedisSettings) -> Link {
        let link = Link::default();
        let slot = link.current.clone();
        let address = match &target {
            Target::Single(client) => client.get_connection_info().addr().to_string(),
            Target::Cluster(seeds) => seeds
                .iter()
                .map(|seed| super::address_of(seed))
                .collect::<Vec<_>>()
                .join(","),
        };
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                match open(&target, &settings).await {
                    Ok(connection) => {
                        *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(connection);
                        tracing::info!(%address, "connected to Redis");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(%address, error = %err, "cannot connect to Redis yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(settings.reconnect_max);
                    }
                }
            }
        });
        link
    }

    /// Replaces the connection (the master moved: see `sentinel.rs`).
    pub fn set(&self, connection: Connection) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(connection);
    }

    /// The connection, or `Unavailable` while it is not established.
    pub fn get(&self) -> Result<Connection, BrokerError> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| BrokerError::Unavailable("not connected to Redis yet".into()))
    }
}

/// Opens a command connection to `target`.
pub async fn open(target: &Target, settings: &RedisSettings) -> Result<Connection, RedisError> {
    match target {
        Target::Single(client) => {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.command_timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(settings.reconnect_max);
            let manager = client.get_connection_manager_with_config(config).await?;
            Ok(Connection::Single(manager))
        }
        Target::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                .retries(2);
            if let Some(ca) = &settings.tls_ca {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                });
            }
            let connection = builder.build()?.get_async_connection().await?;
            Ok(Connection::Cluster(connection))
        }
    }
}

/// Maps a Redis failure to what callers need to know: unreachable (nothing happened),
/// timed out (it may have happened), or anything else.
pub fn broker_error(err: RedisError) -> BrokerError {
    let text = err.to_string();
    if err.is_timeout() {
        BrokerError::Timeout(text)
    } else if err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_io_error()
        || err.is_cluster_error()
        || text.contains("LOADING")
        || text.contains("TRYAGAIN")
        || text.contains("CLUSTERDOWN")
        // A replica (a demoted master) refuses writes before doing any.
        || text.contains("READONLY")
    {
        BrokerError::Unavailable(text)
    } else {
        BrokerError::Internal(text)
    }
}
