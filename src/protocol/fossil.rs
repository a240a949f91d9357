//! The Fossil delta format (as in Fossil SCM's `delta.c`, and Centrifugo's `delta:
//! fossil`): a compact description of a target byte string as copies from a source and
//! literal inserts, ending in a checksum of the target.
//!
//! ```text
//! delta   = size "\n" command* checksum ";"
//! command = count "@" offset ","      copy `count` bytes of the source from `offset`
//!         | count ":" bytes           insert the next `count` bytes of the delta
//! ```
//! Numbers are written in a base-64 alphabet (`0-9 A-Z _ a-z ~`, most significant digit
//! first). The checksum is the wrapping sum of the target read as big-endian 32-bit words
//! (the last one padded with zeros). Any Fossil delta decoder (for example the npm
//! package `fossil-delta`) applies what [`create`] makes.
//!
//! Why not a crate: the one on crates.io panics on malformed input and allocates what
//! the input claims; a client applies deltas that arrive from the network, so [`apply`]
//! here checks every bound and never allocates more than the caller allows.

/// Bytes per hashed block of the source.
const NHASH: usize = 16;
/// Most candidate blocks compared per position of the target.
const MAX_CANDIDATES: usize = 250;

const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta is not in the Fossil format, or refers outside the source.
    #[error("malformed delta: {0}")]
    Malformed(&'static str),
    /// The target would be larger than allowed.
    #[error("the delta's output ({size} bytes) exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size the delta announces.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The result does not match the delta's checksum (wrong source).
    #[error("checksum mismatch: the delta was made against another source")]
    Checksum,
}

/// The delta that turns `source` into `target`.
pub fn create(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 32);
    put_int(&mut out, target.len());
    out.push(b'\n');
    if source.len() <= NHASH {
        insert(&mut out, target);
        put_int(&mut out, checksum(target) as usize);
        out.push(b';');
        return out;
    }
    let index = SourceIndex::new(source);
    let mut base = 0;
    while base + NHASH < target.len() {
        let mut hash = Rolling::new(&target[base..]);
        let mut i = 0;
        loop {
            if let Some((count, offset, literal)) =
                index.best_match(source, &target[base..], i, hash.value())
            {
                if literal > 0 {
                    insert(&mut out, &target[base..base + literal]);
                    base += literal;
                }
                put_int(&mut out, count);
                out.push(b'@');
                put_int(&mut out, offset);
                out.push(b',');
                base += count;
                break;
            }
            if base + i + NHASH >= target.len() {
                insert(&mut out, &target[base..]);
                base = target.len();
                break;
            }
            hash.roll(target[base + i + NHASH]);
            i += 1;
        }
    }
    if base < target.len() {
        insert(&mut out, &target[base..]);
    }
    put_int(&mut out, checksum(target) as usize);
    out.push(b';');
    out
}

/// Every NHASH-aligned block of a delta's source, indexed by its rolling hash; blocks
/// in the same bucket are chained through `collide`.
struct SourceIndex {
    landmark: Vec<usize>,
    collide: Vec<usize>,
}

impl SourceIndex {
    fn new(source: &[u8]) -> SourceIndex {
        let buckets = source.len() / NHASH;
        let mut landmark = vec![usize::MAX; buckets];
        let mut collide = vec![usize::MAX; buckets];
        let mut block = 0;
        while block * NHASH + NHASH <= source.len() && block < buckets {
            let hv = Rolling::new(&source[block * NHASH..]).value() as usize % buckets;
            collide[block] = landmark[hv];
            landmark[hv] = block;
            block += 1;
        }
        SourceIndex { landmark, collide }
    }

    /// The longest copy from `source` worth its cost that covers `target[i..]`'s window
    /// hashing to `hash`, extended backwards into `target[..i]`: `(count, offset,
    /// literal)`, where `literal` bytes of `target` precede it.
    fn best_match(
        &self,
        source: &[u8],
        target: &[u8],
        i: usize,
        hash: u32,
    ) -> Option<(usize, usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None;
        let mut candidate = self.landmark[hash as usize % self.landmark.len()];
        let mut limit = MAX_CANDIDATES;
        while candidate != usize::MAX && limit > 0 {
            limit -= 1;
            let src = candidate * NHASH;
            let forward = source[src..]
                .iter()
                .zip(&target[i..])
                .take_while(|(a, b)| a == b)
                .count();
            if forward > 0 {
                let backward = (1..=src.min(i))
                    .take_while(|k| source[src - k] == target[i - k])
                    .count();
                let offset = src - backward;
                let count = forward + backward;
                let literal = i - backward;
                let cost = digit_count(literal) + digit_count(count) + digit_count(offset) + 3;
                if count >= cost && best.is_none_or(|(c, _, _)| count > c) {
                    best = Some((count, offset, literal));
                }
            }
            candidate = self.collide[candidate];
        }
        best
    }
}

/// The target size a delta announces, without applying it.
pub fn output_size(delta: &[u8]) -> Result<usize, DeltaError> {
    let mut reader = Reader { rest: delta };
    reader.int()
}

/// Applies `delta` to `source`. Fails (never panics) on malformed input, a wrong source,
/// or a target larger than `limit` bytes.
pub fn apply(source: &[u8], delta: &[u8], limit: usize) -> Result<Vec<u8>, DeltaError> {
    let mut reader = Reader { rest: delta };
    let size = reader.int()?;
    if size > limit {
        return Err(DeltaError::TooLarge { size, limit });
    }
    reader.expect(b'\n', "no newline after the size")?;
    let mut out = Vec::with_capacity(size);
    while !reader.rest.is_empty() {
        let count = reader.int()?;
        match reader.op()? {
            b'@' => {
                let offset = reader.int()?;
                reader.expect(b',', "copy not terminated by ','")?;
                let end = offset
                    .checked_add(count)
                    .filter(|end| *end <= source.len())
                    .ok_or(DeltaError::Malformed(
                        "copy extends past the end of the source",
                    ))?;
                if out.len() + count > size {
                    return Err(DeltaError::Malformed("copy exceeds the announced size"));
                }
                out.extend_from_slice(&source[offset..end]);
            }
            b':' => {
                if out.len() + count > size {
                    return Err(DeltaError::Malformed("insert exceeds the announced size"));
                }
                if count > reader.rest.len() {
                    return Err(DeltaError::Malformed("insert longer than the delta"));
                }
                let (literal, rest) = reader.rest.split_at(count);
                out.extend_from_slice(literal);
                reader.rest = rest;
            }
            b';' => {
                if count as u64 != u64::from(checksum(&out)) {
                    return Err(DeltaError::Checksum);
                }
                if out.len() != size {
                    return Err(DeltaError::Malformed(
                        "output differs from the announced size",
                    ));
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::Malformed("unknown command")),
        }
    }
    Err(DeltaError::Malformed("unterminated delta"))
}

/// Reads a delta from its start.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    /// A base-64 number (at least one digit; at most what fits a `usize` with room).
    fn int(&mut self) -> Result<usize, DeltaError> {
        let digits = self
            .rest
            .iter()
            .take_while(|c| digit_value(**c).is_some())
            .count();
        if digits == 0 {
            return Err(DeltaError::Malformed("number expected"));
        }
        if digits > 8 {
            return Err(DeltaError::Malformed("number too large"));
        }
        let value = self.rest[..digits].iter().fold(0usize, |v, c| {
            (v << 6) | digit_value(*c).unwrap_or(0) as usize
        });
        self.rest = &self.rest[digits..];
        Ok(value)
    }

    fn op(&mut self) -> Result<u8, DeltaError> {
        let (&op, rest) = self
            .rest
            .split_first()
            .ok_or(DeltaError::Malformed("command expected"))?;
        self.rest = rest;
        Ok(op)
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), DeltaError> {
        match self.rest.split_first() {
            Some((&c, rest)) if c == byte => {
                self.rest = rest;
                Ok(())
            }
            _ => Err(DeltaError::Malformed(what)),
        }
    }
}

fn digit_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'_' => Some(36),
        b'a'..=b'z' => Some(c - b'a' + 37),
        b'~' => Some(63),
        _ => None,
    }
}

fn put_int(out: &mut Vec<u8>, mut value: usize) {
    if value == 0 {
        out.push(b'0');
        return;
    }
    let mut digits = [0u8; 12];
    let mut n = 0;
    while value > 0 {
        digits[n] = DIGITS[value & 63];
        value >>= 6;
        n += 1;
    }
    out.extend(digits[..n].iter().rev());
}

fn insert(out: &mut Vec<u8>, literal: &[u8]) {
    put_int(out, literal.len());
    out.push(b':');
    out.extend_from_slice(literal);
}

/// Digits of `value` in base 64.
fn digit_count(value: usize) -> usize {
    let mut digits = 1;
    let mut bound = 64usize;
    while value >= bound && digits < 11 {
        digits += 1;
        bound = bound.saturating_mul(64);
    }
    digits
}

/// Wrapping sum of big-endian 32-bit words, the last padded with zeros.
fn checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0u32, |sum, chunk| {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        sum.wrapping_add(u32::from_be_bytes(word))
    })
}

/// The rolling hash of the last NHASH bytes (Fossil's Adler-like hash).
struct Rolling {
    a: u16,
    b: u16,
    window: [u8; NHASH],
    at: usize,
}

impl Rolling {
    fn new(bytes: &[u8]) -> Self {
        let mut window = [0u8; NHASH];
        window.copy_from_slice(&bytes[..NHASH]);
        let (mut a, mut b) = (u16::from(window[0]), u16::from(window[0]));
        for &c in &window[1..] {
            a = a.wrapping_add(u16::from(c));
            b = b.wrapping_add(a);
        }
        Rolling {
            a,
            b,
            window,
            at: 0,
        }
    }

    fn roll(&mut self, c: u8) {
        let old = u16::from(self.window[self.at]);
        self.window[self.at] = c;
        self.at = (self.at + 1) % NHASH;
        self.a = self.a.wrapping_sub(old).wrapping_add(u16::from(c));
        self.b = self
            .b
            .wrapping_sub((NHASH as u16).wrapping_mul(old))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn the_format_is_fossils() {
        // A source too short to index: the whole target is inserted. "abc" is the word
        // 0x61626300, written in the base-64 alphabet.
        let mut expected = b"3\n3:abc".to_vec();
        put_int(&mut expected, 0x6162_6300);
        expected.push(b';');
        assert_eq!(expected, b"3\n3:abc1XObC0;");
        assert_eq!(create(b"", b"abc"), expected);
        assert_eq!(apply(b"", &expected, LIMIT).unwrap(), b"abc");
        // A copy command: the source's first 32 bytes, then "!".
        let source = b"0123456789abcdefghijklmnopqrstuv";
        let mut target = source.to_vec();
        target.push(b'!');
        let delta = create(source, &target);
        assert!(
            delta.starts_with(b"X\nW@0,1:!"),
            "{}",
            String::from_utf8_lossy(&delta)
        );
        assert_eq!(apply(source, &delta, LIMIT).unwrap(), target);
    }

    #[test]
    fn an_edited_document_becomes_a_short_delta() {
        let before = br#"{"id":1234,"title":"Login page shows a blank screen on Safari","status":"open","priority":"high","assignee":"maria","labels":["bug","frontend"],"description":"Steps: open /login on Safari 17, the page stays white. Console shows a CSP error.","updated_at":"2026-12-06T10:00:00Z"}"#;
        let after = br#"{"id":1234,"title":"Login page shows a blank screen on Safari","status":"in_progress","priority":"high","assignee":"maria","labels":["bug","frontend"],"description":"Steps: open /login on Safari 17, the page stays white. Console shows a CSP error.","updated_at":"2026-12-06T10:05:00Z"}"#;
        let delta = create(before, after);
        assert!(
            delta.len() < after.len() / 4,
            "delta of {} bytes",
            delta.len()
        );
        assert_eq!(apply(before, &delta, LIMIT).unwrap(), after);
    }

    #[test]
    fn malformed_deltas_are_refused() {
        let source = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let good = create(source, b"0123456789abcdefghijklmnopqrstuvwxyz!");
        for bad in [
            &b""[..],
            b"\n",
            b"5",
            b"5\n",
            b"5\n5:ab",
            b"5\n2@999,0;",
            b"1\n1?a0;",
            b"zzzzzzzzzzzz\n",
            &good[..good.len() - 1],
        ] {
            assert!(
                apply(source, bad, LIMIT).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Applied to another source, the checksum (or a bound) catches it.
        assert!(apply(b"something else entirely, not the source", &good, LIMIT).is_err());
    }

    #[test]
    fn the_output_limit_is_checked_before_allocating() {
        let delta = create(b"", &vec![b'x'; 1000]);
        assert_eq!(output_size(&delta), Ok(1000));
        assert_eq!(
            apply(b"", &delta, 999),
            Err(DeltaError::TooLarge {
                size: 1000,
                limit: 999
            })
        );
        // A delta claiming a huge output is refused without reserving it.
        assert!(matches!(
            apply(b"", b"~~~~~~~~\n0;", LIMIT),
            Err(DeltaError::TooLarge { .. })
        ));
    }

    /// Deltas made here between successive JSON texts, for the TypeScript SDK's tests
    /// (`clients/js/test/unit/delta.test.mjs` applies them). Refresh the committed file
    /// with `UPDATE_FIXTURES=1 cargo test --lib fossil`.
    #[test]
    fn the_sdk_fixture_is_what_this_code_makes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/js/test/unit/fossil-fixture.json"
        );
        let mut doc = serde_json::json!({
            "id": 1234,
            "title": "Login page shows a blank screen on Safari 17 — après le déploiement 🚀",
            "description": "Steps: open /login in Safari 17.2; the page stays white and the console shows a CSP violation for the inline bootstrap script.",
            "status": "open",
            "labels": ["bug", "frontend"],
            "version": 1
        });
        let mut steps = Vec::new();
        let mut before = serde_json::to_string(&doc).unwrap();
        let edits: [(&str, serde_json::Value); 6] = [
            ("status", "in_progress".into()),
            (
                "title",
                "Login page shows a blank screen on Safari 17 — corrigé ✅".into(),
            ),
            ("labels", serde_json::json!(["bug", "frontend", "safari"])),
            ("status", "done".into()),
            (
                "description",
                "Fixed by moving the bootstrap script to a file.".into(),
            ),
            ("assignee", "aiko".into()),
        ];
        for (version, (field, value)) in edits.into_iter().enumerate() {
            doc[field] = value;
            doc["version"] = serde_json::json!(version + 2);
            let after = serde_json::to_string(&doc).unwrap();
            let delta = create(before.as_bytes(), after.as_bytes());
            assert_eq!(
                apply(before.as_bytes(), &delta, LIMIT).unwrap(),
                after.as_bytes()
            );
            steps.push(serde_json::json!({
                "base": before,
                "delta": String::from_utf8(delta).expect("these deltas are UTF-8"),
                "target": after,
            }));
            before = after;
        }
        let made = serde_json::to_string_pretty(&steps).unwrap() + "\n";
        if std::env::var_os("UPDATE_FIXTURES").is_some() {
            std::fs::write(path, &made).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == made,
            "{path} is stale: refresh it with UPDATE_FIXTURES=1 cargo test --lib fossil"
        );
    }

    /// One edit of a document: replace, insert or delete a run of bytes.
    fn edit() -> impl Strategy<Value = (u8, usize, usize, Vec<u8>)> {
        (
            0u8..3,
            any::<usize>(),
            0usize..40,
            prop::collection::vec(any::<u8>(), 0..40),
        )
    }

    fn apply_edit(doc: &mut Vec<u8>, (kind, at, len, bytes): &(u8, usize, usize, Vec<u8>)) {
        let at = if doc.is_empty() {
            0
        } else {
            at % (doc.len() + 1)
        };
        let end = (at + len).min(doc.len());
        match kind {
            0 => {
                doc.splice(at..end, bytes.iter().copied());
            }
            1 => {
                doc.splice(at..at, bytes.iter().copied());
            }
            _ => {
                doc.drain(at..end);
            }
        }
    }

    proptest! {
        #[test]
        fn random_edit_sequences_round_trip(
            start in prop::collection::vec(any::<u8>(), 0..600),
            edits in prop::collection::vec(edit(), 1..12),
        ) {
            let mut doc = start;
            for e in &edits {
                let before = doc.clone();
                apply_edit(&mut doc, e);
                let delta = create(&before, &doc);
                prop_assert_eq!(apply(&before, &delta, LIMIT).unwrap(), doc.clone());
            }
        }

        #[test]
        fn json_like_documents_round_trip(
            fields in prop::collection::vec(("[a-z]{1,8}", "[ -~]{0,60}"), 1..20),
            edits in prop::collection::vec((any::<usize>(), "[ -~\u{e9}\u{1f600}]{0,30}"), 1..10),
        ) {
            let mut fields = fields;
            let render = |fields: &[(String, String)]| {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                    .collect();
                serde_json::to_vec(&object).unwrap()
            };
            let mut before = render(&fields);
            for (at, value) in edits {
                let index = at % fields.len();
                fields[index].1 = value;
                let after = render(&fields);
                let delta = create(&before, &after);
                prop_assert_eq!(apply(&before, &delta, LIMIT).unwrap(), after.clone());
                before = after;
            }
        }

        #[test]
        fn arbitrary_deltas_never_panic(
            source in prop::collection::vec(any::<u8>(), 0..64),
            delta in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = apply(&source, &delta, LIMIT);
        }
    }
}
