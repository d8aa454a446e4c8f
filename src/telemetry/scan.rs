//! Reading the `usage` of an answer as it is relayed, without holding back a byte: the relay
//! hands every chunk it has already passed on to `UsageScan::seen`, which keeps a reference
//! (not a copy) to the few chunks that can carry usage; they are parsed once the answer is
//! over. A stream's usage is in its `message_start` (input, cache) and `message_delta`
//! (output so far, cumulative) events; a whole message's is its body's `usage` object
//! (`specs/anthropic.md` §5).
//!
//! Must not: keep more than `KEEP_AT_MOST` bytes of an answer, or fail the relay.

use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;

use crate::api::Tokens;

/// The most bytes of one answer kept for the scan; a larger body's usage is not counted.
pub const KEEP_AT_MOST: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An uncompressed event stream: only events naming `"usage"` are kept.
    Events,
    /// A JSON body, compressed with gzip or not: all of it is kept (up to the bound).
    Json { gzip: bool },
}

pub struct UsageScan {
    shape: Shape,
    kept: Vec<Bytes>,
    bytes: usize,
    overflow: bool,
    /// A stream's chunks that carry a thinking block's signature (or a redacted block), for
    /// `produced`; a whole message's are in `kept`.
    thinking: Vec<Bytes>,
}

#[derive(Default, Deserialize)]
struct UsageFields {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl UsageFields {
    /// Later fields win: a `message_delta` carries cumulative counts.
    fn fold_into(&self, t: &mut Tokens) {
        t.input = self.input_tokens.unwrap_or(t.input);
        t.output = self.output_tokens.unwrap_or(t.output);
        t.cache_read = self.cache_read_input_tokens.unwrap_or(t.cache_read);
        t.cache_creation = self.cache_creation_input_tokens.unwrap_or(t.cache_creation);
    }
}

#[derive(Deserialize)]
struct Body {
    usage: Option<UsageFields>,
    /// What the API did to the request's input before the model read it (`specs/anthropic.md`
    /// §8): here only thinking blocks it dropped are counted.
    #[serde(default)]
    input_transformations: Vec<Transformation>,
}

#[derive(Deserialize)]
struct Transformation {
    #[serde(rename = "type")]
    kind: String,
}

impl Body {
    fn thinking_dropped(&self) -> usize {
        self.input_transformations
            .iter()
            .filter(|t| t.kind == "thinking_dropped")
            .count()
    }
}

/// What a finished answer said about itself.
#[derive(Debug, Default, PartialEq)]
pub struct Scanned {
    /// Its tokens, when it named any.
    pub tokens: Option<Tokens>,
    /// Thinking blocks of the request's history the API dropped instead of reading
    /// (`input_transformations`, present only when the request named the beta that asks).
    pub thinking_dropped: usize,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Body>,
    usage: Option<UsageFields>,
}

/// Whether `b` holds the JSON key `"usage"` (an escaped quote inside text never matches).
/// Vectorized: every chunk of every stream passes here.
fn names_usage(b: &[u8]) -> bool {
    memchr::memmem::find(b, b"\"usage\"").is_some()
}

/// Whether `b` carries a thinking block's signature or a redacted block.
fn names_thinking(b: &[u8]) -> bool {
    memchr::memmem::find(b, b"signature_delta").is_some()
        || memchr::memmem::find(b, b"redacted_thinking").is_some()
}

impl UsageScan {
    pub fn new(shape: Shape) -> Self {
        UsageScan {
            shape,
            kept: Vec::new(),
            bytes: 0,
            overflow: false,
            thinking: Vec::new(),
        }
    }

    /// The thinking blocks the answer produced (`continuity::produced`).
    pub fn produced(&self) -> Vec<crate::proxy::continuity::BlockId> {
        let (chunks, stream) = match self.shape {
            Shape::Events => (&self.thinking, true),
            Shape::Json { gzip: false } => (&self.kept, false),
            // A compressed body's blocks are not read: they count as no account's.
            Shape::Json { gzip: true } => return Vec::new(),
        };
        let mut all = Vec::new();
        for c in chunks {
            all.extend_from_slice(c);
        }
        crate::proxy::continuity::produced(&all, stream)
    }

    /// A chunk that has gone to the client.
    pub fn seen(&mut self, chunk: &Bytes) {
        if self.overflow {
            return;
        }
        if self.shape == Shape::Events && names_thinking(chunk) {
            self.bytes += chunk.len();
            if self.bytes > KEEP_AT_MOST {
                self.overflow = true;
                self.kept.clear();
                self.thinking.clear();
                return;
            }
            self.thinking.push(chunk.clone());
        }
        if self.shape == Shape::Events && !names_usage(chunk) {
            return;
        }
        self.bytes += chunk.len();
        if self.bytes > KEEP_AT_MOST {
            self.overflow = true;
            self.kept.clear();
            return;
        }
        self.kept.push(chunk.clone());
    }

    /// The answer is over: what it named.
    pub fn finish(self) -> Scanned {
        if self.overflow || self.kept.is_empty() {
            return Scanned::default();
        }
        let mut all = Vec::with_capacity(self.bytes);
        for c in &self.kept {
            all.extend_from_slice(c);
        }
        match self.shape {
            Shape::Json { gzip } => {
                let body = if gzip {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(all.as_slice())
                        .take(KEEP_AT_MOST as u64 * 8)
                        .read_to_end(&mut out)
                        .ok()
                        .map(|_| out)
                        .unwrap_or_default()
                } else {
                    all
                };
                let Ok(b) = serde_json::from_slice::<Body>(&body) else {
                    return Scanned::default();
                };
                Scanned {
                    thinking_dropped: b.thinking_dropped(),
                    tokens: b.usage.map(|u| {
                        let mut t = Tokens {
                            requests: 1,
                            ..Tokens::default()
                        };
                        u.fold_into(&mut t);
                        t
                    }),
                }
            }
            Shape::Events => {
                let text = String::from_utf8_lossy(&all);
                let mut t = Tokens {
                    requests: 1,
                    ..Tokens::default()
                };
                let mut any = false;
                let mut thinking_dropped = 0;
                for line in text.lines() {
                    let Some(data) = line.strip_prefix("data:") else {
                        continue;
                    };
                    let Ok(ev) = serde_json::from_str::<Event>(data.trim_start()) else {
                        continue;
                    };
                    let usage = match ev.kind.as_str() {
                        "message_start" => ev.message.and_then(|m| {
                            thinking_dropped += m.thinking_dropped();
                            m.usage
                        }),
                        "message_delta" => ev.usage,
                        _ => None,
                    };
                    if let Some(u) = usage {
                        u.fold_into(&mut t);
                        any = true;
                    }
                }
                Scanned {
                    tokens: any.then_some(t),
                    thinking_dropped,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(shape: Shape, chunks: &[&[u8]]) -> Option<Tokens> {
        let mut s = UsageScan::new(shape);
        for c in chunks {
            s.seen(&Bytes::copy_from_slice(c));
        }
        s.finish().tokens
    }

    #[test]
    fn a_stream_takes_input_from_its_start_and_output_from_its_last_delta() {
        let t = scan(
            Shape::Events,
            &[
                b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"the \\\"usage\\\" word\"}}\n\n",
                b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
                b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n",
            ],
        )
        .unwrap();
        assert_eq!(
            t,
            Tokens {
                requests: 1,
                input: 12,
                output: 42,
                cache_read: 100,
                cache_creation: 0
            }
        );
    }

    #[test]
    fn text_that_mentions_usage_is_not_kept() {
        let mut s = UsageScan::new(Shape::Events);
        s.seen(&Bytes::from_static(
            b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"\\\"usage\\\"\"}}\n\n",
        ));
        assert!(s.kept.is_empty());
        assert_eq!(s.finish(), Scanned::default());
    }

    #[test]
    fn a_whole_body_is_read_plain_or_gzipped_across_chunks() {
        let body = br#"{"id":"m","usage":{"input_tokens":5,"output_tokens":9,"cache_creation_input_tokens":3}}"#;
        let want = Tokens {
            requests: 1,
            input: 5,
            output: 9,
            cache_read: 0,
            cache_creation: 3,
        };
        assert_eq!(
            scan(Shape::Json { gzip: false }, &[&body[..10], &body[10..]]),
            Some(want)
        );
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(
            scan(Shape::Json { gzip: true }, &[&gz[..7], &gz[7..]]),
            Some(want)
        );
        assert_eq!(
            scan(Shape::Json { gzip: false }, &[b"{\"input_tokens\":3}"]),
            None
        );
    }

    #[test]
    fn a_body_over_the_bound_is_not_counted() {
        let mut s = UsageScan::new(Shape::Json { gzip: false });
        s.seen(&Bytes::from(vec![b' '; KEEP_AT_MOST]));
        s.seen(&Bytes::from_static(b"{\"usage\":{\"input_tokens\":1}}"));
        assert!(s.kept.is_empty());
        assert_eq!(s.finish(), Scanned::default());
    }

    #[test]
    fn thinking_blocks_the_api_dropped_are_counted_from_a_stream_or_a_body() {
        let mut s = UsageScan::new(Shape::Events);
        s.seen(&Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"input_transformations\":[{\"type\":\"thinking_dropped\",\"path\":\"messages.1.content.0\",\"reason\":\"organization_binding_mismatch\"},{\"type\":\"thinking_dropped\",\"path\":\"messages.3.content.0\",\"reason\":\"a reason not known yet\"},{\"type\":\"something_else\"}],\"usage\":{\"input_tokens\":4}}}\n\n",
        ));
        let got = s.finish();
        assert_eq!(got.thinking_dropped, 2);
        assert_eq!(got.tokens.map(|t| t.input), Some(4));

        let mut s = UsageScan::new(Shape::Json { gzip: false });
        s.seen(&Bytes::from_static(
            br#"{"input_transformations":[{"type":"thinking_dropped","path":"messages.1.content.0","reason":"organization_binding_mismatch"}],"usage":{"input_tokens":4}}"#,
        ));
        assert_eq!(s.finish().thinking_dropped, 1);

        let mut s = UsageScan::new(Shape::Json { gzip: false });
        s.seen(&Bytes::from_static(br#"{"usage":{"input_tokens":4}}"#));
        assert_eq!(s.finish().thinking_dropped, 0);
    }
}
