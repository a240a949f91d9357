//! A publication on its way out: encoded at most once per encoding, and the encoded
//! frame shared (reference-counted bytes) by every local subscriber of that encoding.

use crate::broker::Publication;
use crate::protocol::{Encoded, Encoding, MessageFrameRef};
use std::sync::{Arc, OnceLock};

/// A publication with its lazily encoded `message` frames.
#[derive(Debug)]
pub struct Outgoing {
    /// The publication.
    pub publication: Arc<Publication>,
    frames: [OnceLock<Encoded>; 2],
}

impl Outgoing {
    /// Wraps a publication; nothing is encoded until a subscriber needs it.
    pub fn new(publication: Arc<Publication>) -> Arc<Self> {
        Arc::new(Outgoing {
            publication,
            frames: [OnceLock::new(), OnceLock::new()],
        })
    }

    /// Sequence number of the publication.
    pub fn seq(&self) -> u64 {
        self.publication.seq
    }

    /// The `message` frame in `encoding`, encoded on first use. Cloning an [`Encoded`]
    /// only bumps a reference count.
    pub fn frame(&self, encoding: Encoding) -> Encoded {
        self.frames[encoding.index()]
            .get_or_init(|| {
                let p = &self.publication;
                encoding.encode(&MessageFrameRef {
                    kind: "message",
                    room: p.room.as_str(),
                    epoch: &p.epoch,
                    seq: p.seq,
                    time: p.time_ms,
                    data: &p.data,
                })
            })
            .clone()
    }
}
