//! A publication on its way out: encoded at most once per encoding, and the encoded
//! frame shared (reference-counted bytes) by every local subscriber of that encoding.
//!
//! Subscriptions with `delta` get the data as JSON text, whole or as a Fossil delta
//! against the previous publication; the text, the delta (made at most once per
//! publication, always against the publication just before it) and their frames are
//! shared the same way, and exist only for rooms that have such a subscriber.
//!
//! Subscriptions with `compress` get data of at least the instance's threshold deflated
//! (see [`crate::protocol::compress`]): the JSON text or the delta, compressed at most
//! once per publication and form, and its frames shared alike. Every subscriber of an
//! instance has the same threshold, so the first one to need a form decides it for all.

use super::members::Subscriber;
use crate::broker::Publication;
use crate::protocol::{Encoded, Encoding, MessageFrameRef, compress, fossil};
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
    /// The compressed forms, made when the first subscription with `compress` needs them.
    packed: OnceLock<Box<Packed>>,
}

/// Compressed data (base64 of the deflated text; `None` when below the threshold or
/// not smaller) and its frames.
#[derive(Debug, Default)]
struct Packed {
    /// Of the JSON text.
    json: OnceLock<Option<String>>,
    /// Of the delta.
    delta: OnceLock<Option<String>>,
    /// `message` frames with `compressed: true`, by [`Form`] and encoding.
    frames: [[OnceLock<Encoded>; 2]; 3],
}

/// What a subscriber's `message` frame carries as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The value (subscriptions without `delta`).
    Value = 0,
    /// The JSON text (`delta: false`).
    Text = 1,
    /// The delta from the previous publication (`delta: true`).
    Delta = 2,
}

impl Form {
    /// The frame's `delta` field.
    fn delta_field(self) -> Option<bool> {
        match self {
            Form::Value => None,
            Form::Text => Some(false),
            Form::Delta => Some(true),
        }
    }
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
            .get_or_init(|| self.encode(encoding, &self.publication.data, None, false))
            .clone()
    }

    /// The frame `subscriber` gets for this publication, and (for a subscription with
    /// `delta`) the publication becomes the base of its next delta. `previous` is the
    /// room's publication just before this one, when at hand. A delta is sent only when
    /// the subscriber holds exactly that publication from this subscription; otherwise
    /// (first message, after a reset or a restart) the whole text. On a subscription
    /// with `compress`, that data goes deflated when it is large enough and shrinks.
    pub fn frame_for(&self, subscriber: &Subscriber, previous: Option<&Outgoing>) -> Encoded {
        let form = match subscriber.delta {
            None => Form::Value,
            Some(_) => {
                let base = subscriber.replace_base(self.seq());
                let previous = previous.filter(|p| {
                    base != 0
                        && p.seq() == base
                        && base + 1 == self.seq()
                        && p.publication.epoch == self.publication.epoch
                });
                match previous {
                    Some(previous) if self.delta_from(previous).is_some() => Form::Delta,
                    _ => Form::Text,
                }
            }
        };
        if subscriber.compress_above > 0
            && let Some(frame) =
                self.packed_frame(subscriber.encoding, form, subscriber.compress_above)
        {
            return frame;
        }
        match form {
            Form::Value => self.frame(subscriber.encoding),
            Form::Text => self.text_frame(subscriber.encoding, false),
            Form::Delta => self.text_frame(subscriber.encoding, true),
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
                packed: OnceLock::new(),
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
            .get_or_init(|| self.encode(encoding, data, Some(delta), false))
            .clone()
    }

    /// The compressed `message` frame of `form` (whose delta, for [`Form::Delta`], must
    /// have been made), or `None` when that data is below `above` bytes or would not
    /// shrink.
    fn packed_frame(&self, encoding: Encoding, form: Form, above: usize) -> Option<Encoded> {
        let forms = self.text_forms();
        let packed = forms.packed.get_or_init(Box::default);
        let (cell, text) = match form {
            Form::Delta => {
                let delta = forms.delta.get().and_then(Option::as_deref);
                (&packed.delta, delta.expect("the delta was made"))
            }
            Form::Value | Form::Text => (&packed.json, forms.json.as_str()),
        };
        let data = cell
            .get_or_init(|| compress::pack(text, above))
            .as_deref()?;
        let frame = packed.frames[form as usize][encoding.index()]
            .get_or_init(|| self.encode(encoding, data, form.delta_field(), true));
        Some(frame.clone())
    }

    /// The `message` frame of this publication with `data` (the value or its text form).
    fn encode<D: serde::Serialize + ?Sized>(
        &self,
        encoding: Encoding,
        data: &D,
        delta: Option<bool>,
        compressed: bool,
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
            compressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{DeltaFormat, RoomName};
    use crate::room::Forms;
    use crate::stream::Epoch;
    use serde_json::json;

    fn publication(seq: u64, data: serde_json::Value) -> Arc<Outgoing> {
        Outgoing::new(Arc::new(Publication {
            room: RoomName::new_unchecked("board:1"),
            epoch: Epoch::new("e"),
            seq,
            time_ms: 1,
            id: seq,
            data,
            trace: None,
        }))
    }

    /// A subscriber; nothing is queued to it here, so its queue's receiver is dropped.
    fn subscriber(encoding: Encoding, forms: Forms) -> Arc<Subscriber> {
        let (outbound, _) = crate::outbound::channel(8);
        Subscriber::with_forms(1, encoding, outbound, forms)
    }

    #[test]
    fn compressed_frames_are_made_once_and_shared_above_the_threshold_only() {
        let compress = Forms {
            delta: None,
            compress_above: 1024,
        };
        let large = publication(1, json!({"text": "the same paragraph again ".repeat(100)}));
        let small = publication(2, json!({"text": "short"}));
        let (a, b) = (
            subscriber(Encoding::Json, compress),
            subscriber(Encoding::Json, compress),
        );
        let plain = subscriber(Encoding::Json, Forms::default());
        let (fa, fb) = (large.frame_for(&a, None), large.frame_for(&b, None));
        assert_eq!(
            fa.as_bytes().as_ptr(),
            fb.as_bytes().as_ptr(),
            "one frame, shared"
        );
        assert!(fa.as_text().unwrap().contains(r#""compressed":true"#));
        assert!(fa.as_bytes().len() < large.frame(Encoding::Json).as_bytes().len() / 10);
        // Below the threshold, and for subscribers that did not ask: the plain frame.
        assert_eq!(
            small.frame_for(&a, None).as_bytes().as_ptr(),
            small.frame(Encoding::Json).as_bytes().as_ptr()
        );
        assert_eq!(
            large.frame_for(&plain, None).as_bytes().as_ptr(),
            large.frame(Encoding::Json).as_bytes().as_ptr()
        );
        // MessagePack subscribers get their own encoding of the same compressed data.
        let packed = large.frame_for(&subscriber(Encoding::MsgPack, compress), None);
        let crate::protocol::ServerFrame::Message {
            data, compressed, ..
        } = Encoding::MsgPack.decode_server(&packed).unwrap()
        else {
            panic!("a message")
        };
        assert!(compressed);
        let text = compress::unpack(data.as_str().unwrap(), 1 << 20).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            large.publication.data
        );
        // With `delta`: the whole text goes compressed, labelled `delta: false`.
        let both = subscriber(
            Encoding::Json,
            Forms {
                delta: Some(DeltaFormat::Fossil),
                compress_above: 1024,
            },
        );
        let frame = large.frame_for(&both, None);
        let text = frame.as_text().unwrap();
        assert!(
            text.contains(r#""delta":false,"compressed":true"#),
            "{text}"
        );
    }
}
