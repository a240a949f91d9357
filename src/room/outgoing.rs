//! A publication on its way out: encoded at most once per encoding, and the encoded
//! frame shared (reference-counted bytes) by every local subscriber of that encoding.
//!
//! Subscriptions with `delta` get the data as JSON text, whole or as a Fossil delta
//! against the previous publication; the text, the delta (made at most once per
//! publication, always against the publication just before it) and their frames are
//! shared the same way, and exist only for rooms that have such a subscriber.

use super::members::Subscriber;
use crate::broker::Publication;
use crate::protocol::{Encoded, Encoding, MessageFrameRef, fossil};
use std::sync::{Arc, OnceLock};

/// A publication with its lazily encoded `message` frames.
#[derive(Debug)]
pub struct Outgoing {
    /// The publication.
    pub publication: Arc<Publication>,
    frames: [OnceLock<Encoded>; 2],
    /// The forms for subscriptions with `delta`, made when the first one needs them.
    text: OnceLock<Box<TextForms>>,
}

/// The data as JSON text, and what is made from it.
#[derive(Debug)]
struct TextForms {
    /// The data's JSON text: what a delta subscriber holds as the base of the next delta.
    json: String,
    /// `message` frames with the whole text (`delta: false`), per encoding.
    whole: [OnceLock<Encoded>; 2],
    /// The delta from the previous publication's text, when it is smaller than the text
    /// and valid UTF-8 (a JSON string must be); `None` otherwise.
    delta: OnceLock<Option<String>>,
    /// `message` frames with the delta (`delta: true`), per encoding.
    delta_frames: [OnceLock<Encoded>; 2],
}

impl Outgoing {
    /// Wraps a publication; nothing is encoded until a subscriber needs it.
    pub fn new(publication: Arc<Publication>) -> Arc<Self> {
        Arc::new(Outgoing {
            publication,
            frames: [OnceLock::new(), OnceLock::new()],
            text: OnceLock::new(),
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
            .get_or_init(|| self.encode(encoding, &self.publication.data, None))
            .clone()
    }

    /// The frame `subscriber` gets for this publication, and (for a subscription with
    /// `delta`) the publication becomes the base of its next delta. `previous` is the
    /// room's publication just before this one, when at hand. A delta is sent only when
    /// the subscriber holds exactly that publication from this subscription; otherwise
    /// (first message, after a reset or a restart) the whole text.
    pub fn frame_for(&self, subscriber: &Subscriber, previous: Option<&Outgoing>) -> Encoded {
        if subscriber.delta.is_none() {
            return self.frame(subscriber.encoding);
        }
        let base = subscriber.replace_base(self.seq());
        let previous = previous.filter(|p| {
            base != 0
                && p.seq() == base
                && base + 1 == self.seq()
                && p.publication.epoch == self.publication.epoch
        });
        match previous {
            Some(previous) if self.delta_from(previous).is_some() => {
                self.text_frame(subscriber.encoding, true)
            }
            _ => self.text_frame(subscriber.encoding, false),
        }
    }

    /// The frames `subscriber` gets for a replay (consecutive publications, oldest
    /// first): the first whole, the others as deltas where they pay.
    pub fn replay_frames(subscriber: &Subscriber, replay: &[Arc<Outgoing>]) -> Vec<Encoded> {
        let mut previous: Option<&Outgoing> = None;
        replay
            .iter()
            .map(|outgoing| {
                let frame = outgoing.frame_for(subscriber, previous);
                previous = Some(outgoing);
                frame
            })
            .collect()
    }

    fn text_forms(&self) -> &TextForms {
        self.text.get_or_init(|| {
            Box::new(TextForms {
                json: serde_json::to_string(&self.publication.data)
                    .expect("JSON values always serialize"),
                whole: [OnceLock::new(), OnceLock::new()],
                delta: OnceLock::new(),
                delta_frames: [OnceLock::new(), OnceLock::new()],
            })
        })
    }

    /// The delta from `previous` (the publication just before this one), made once.
    fn delta_from(&self, previous: &Outgoing) -> Option<&str> {
        let forms = self.text_forms();
        forms
            .delta
            .get_or_init(|| {
                let base = previous.text_forms().json.as_bytes();
                let delta = fossil::create(base, forms.json.as_bytes());
                if delta.len() >= forms.json.len() {
                    return None;
                }
                String::from_utf8(delta).ok()
            })
            .as_deref()
    }

    /// The text form of the `message` frame: the delta (which must have been made) or
    /// the whole JSON text.
    fn text_frame(&self, encoding: Encoding, delta: bool) -> Encoded {
        let forms = self.text_forms();
        let (cell, data) = if delta {
            let delta = forms.delta.get().and_then(Option::as_deref);
            (&forms.delta_frames, delta.expect("the delta was made"))
        } else {
            (&forms.whole, forms.json.as_str())
        };
        cell[encoding.index()]
            .get_or_init(|| self.encode(encoding, data, Some(delta)))
            .clone()
    }

    /// The `message` frame of this publication with `data` (the value or its text form).
    fn encode<D: serde::Serialize + ?Sized>(
        &self,
        encoding: Encoding,
        data: &D,
        delta: Option<bool>,
    ) -> Encoded {
        let p = &self.publication;
        encoding.encode(&MessageFrameRef {
            kind: "message",
            room: p.room.as_str(),
            epoch: &p.epoch,
            seq: p.seq,
            time: p.time_ms,
            data,
            delta,
        })
    }
}
