//! Transport adapters: how frames of the session core reach a client. Each adapter turns
//! the codec's [`Encoded`](crate::protocol::Encoded) frames into its own frame type and
//! back; the session's guarantees live once, in [`crate::connection`].

pub mod websocket;
