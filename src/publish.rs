//! Publishing, one way for everyone: the session core (a client's `publish` frame),
//! `POST /api/v1/publish` and the outbox relay all hand their publishes to a
//! [`Publisher`]. The broker sequences the message and remembers its idempotency key
//! (a retry with the same key gets the original ack); the publisher bounds the wait and
//! counts the outcome.

use crate::broker::{Broker, BrokerError, PublishAck, PublishRequest};
use crate::protocol::RoomName;
use std::sync::Arc;
use std::time::Duration;

/// Longest a publish may wait for the broker before the caller is told `timeout`.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes through the broker. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
}

impl Publisher {
    /// A publisher over `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Publisher { broker }
    }

    /// Publishes `request` to `room` within [`PUBLISH_TIMEOUT`], counting the outcome
    /// in `roomcast_messages_published_total{result}`. An ack means the message is
    /// sequenced and will reach every subscriber.
    pub async fn publish(
        &self,
        room: &RoomName,
        request: PublishRequest,
    ) -> Result<PublishAck, BrokerError> {
        let result =
            match tokio::time::timeout(PUBLISH_TIMEOUT, self.broker.publish(room, request)).await {
                Ok(result) => result,
                Err(_) => Err(BrokerError::Timeout(format!(
                    "no answer within {PUBLISH_TIMEOUT:?}"
                ))),
            };
        let metrics = crate::telemetry::metrics::per_publication();
        let outcome = match &result {
            Ok(ack) if ack.duplicate => &metrics.published_duplicate,
            Ok(_) => &metrics.published_ok,
            Err(_) => &metrics.published_error,
        };
        outcome.increment(1);
        result
    }
}
