//! Keeping a conversation readable when it moves to another account (specs/continuity.md):
//! which thinking blocks of a request's history an account may not read, and the request that
//! fits it. Thinking blocks belong to the organization that signed them; a model that refuses
//! another organization's blocks gets a request without them, every other byte untouched.
//!
//! Pure: the byte spans of a body's thinking blocks (`History`), the fitting (`fit`), which
//! model does what (`Binding`, `Knowledge`), what a 400 is about (`about_history`), and what an
//! answer produced (`produced`). Must not: re-serialise a body (only whole blocks are cut out,
//! and a `thinking` setting replaced), or change anything when no block has to go.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// A thinking block's identity: the first 16 bytes of the SHA-256 of its signature (or of a
/// redacted block's data). Only this is kept, never the block.
pub type BlockId = [u8; 16];

pub fn block_id(signature: &str) -> BlockId {
    let d = Sha256::digest(signature.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// What a model does with a thinking block another organization signed (specs/anthropic.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Refused with a 400: ccs removes such blocks before the request leaves.
    Reject,
    /// Dropped by the API itself: the request passes untouched.
    Drop,
    /// Read on any account: the request passes untouched.
    Accept,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Reject => "reject",
            Binding::Drop => "drop",
            Binding::Accept => "accept",
        }
    }
}

/// The defaults of specs/anthropic.md §9, by model id prefix; `None` for a model ccs knows
/// nothing about (its requests pass untouched until a 400 teaches otherwise).
pub fn default_binding(model: &str) -> Option<Binding> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("claude-sonnet-5-5") || m.starts_with("claude-haiku-5-5") {
        Some(Binding::Drop)
    } else if m.starts_with("claude-opus-5-5") {
        Some(Binding::Accept)
    } else if [
        "claude-opus-4",
        "claude-sonnet-4",
        "claude-haiku-4",
        "claude-3",
    ]
    .iter()
    .any(|p| m.starts_with(p))
    {
        Some(Binding::Reject)
    } else {
        None
    }
}

/// What ccs knows of each model: config.yaml's word first, then what it learned at run time,
/// then the defaults.
#[derive(Default)]
pub struct Knowledge {
    /// `continuity.models` in config.yaml: model id prefix → binding.
    configured: Vec<(String, Binding)>,
    /// Models whose 400 a fitted retry cured: they refuse foreign blocks.
    learned: Mutex<HashMap<String, Binding>>,
}

impl Knowledge {
    pub fn new(configured: impl IntoIterator<Item = (String, Binding)>) -> Knowledge {
        let mut configured: Vec<(String, Binding)> = configured
            .into_iter()
            .map(|(k, b)| (k.to_ascii_lowercase(), b))
            .collect();
        // The longest prefix first, so it wins.
        configured.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        Knowledge {
            configured,
            learned: Mutex::default(),
        }
    }

    pub fn binding(&self, model: &str) -> Option<Binding> {
        let m = model.to_ascii_lowercase();
        if let Some((_, b)) = self.configured.iter().find(|(k, _)| m.starts_with(k)) {
            return Some(*b);
        }
        if let Some(b) = self.learned().get(&m) {
            return Some(*b);
        }
        default_binding(&m)
    }

    /// A fitted retry cured a 400 on `model`: from now on its moves are fitted up front. True
    /// when this is news.
    pub fn learn(&self, model: &str) -> bool {
        self.learned()
            .insert(model.to_ascii_lowercase(), Binding::Reject)
            != Some(Binding::Reject)
    }

    /// Restores what an earlier run learned.
    pub fn restore(&self, models: impl IntoIterator<Item = String>) {
        let mut l = self.learned();
        for m in models {
            l.insert(m.to_ascii_lowercase(), Binding::Reject);
        }
    }

    /// The models learned at run time, sorted.
    pub fn learned_models(&self) -> Vec<String> {
        let mut v: Vec<String> = self.learned().keys().cloned().collect();
        v.sort();
        v
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One thinking or redacted_thinking block in a request's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub message: usize,
    pub index: usize,
    pub id: BlockId,
}

/// One message's content array: where it is and where each element is, in body bytes.
struct Array {
    span: Range<usize>,
    elements: Vec<Range<usize>>,
    /// Which elements are thinking blocks (index into `History::blocks`).
    thinking: Vec<Option<usize>>,
}

/// The thinking blocks of a request body, with the byte spans needed to cut them out.
pub struct History {
    pub blocks: Vec<Block>,
    arrays: Vec<Array>,
    /// The `thinking` setting's span, and whether it is manual (`enabled`).
    thinking: Option<(Range<usize>, bool)>,
    /// The request returns tool results: a tool loop is running.
    pub in_tool_loop: bool,
    /// The block that opens the final assistant message, if it opens with one.
    final_leading: Option<usize>,
}

#[derive(Deserialize)]
struct Req<'a> {
    #[serde(borrow, default)]
    messages: Vec<Msg<'a>>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(default)]
    role: String,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct ThinkingHead {
    #[serde(rename = "type", default)]
    kind: String,
}

fn span_of(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// Whether `body` may hold a thinking block at all (a fast look before any parse).
pub fn may_hold_thinking(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"signature\"").is_some()
        || memchr::memmem::find(body, b"redacted_thinking").is_some()
}

impl History {
    /// Reads the thinking blocks of a Messages body; `None` when it is not one.
    pub fn read(body: &[u8]) -> Option<History> {
        let req: Req = serde_json::from_slice(body).ok()?;
        let mut blocks = Vec::new();
        let mut arrays = Vec::new();
        let mut final_leading = None;
        let last_assistant = req.messages.iter().rposition(|m| m.role == "assistant");
        let mut in_tool_loop = false;
        for (i, m) in req.messages.iter().enumerate() {
            let Some(content) = m.content else { continue };
            if !content.get().starts_with('[') {
                continue;
            }
            // Borrowed from the body's own bytes, so each element's span is found by address.
            let inner: Vec<&RawValue> = serde_json::from_str(content.get()).ok()?;
            let mut spans = Vec::new();
            let mut thinking = Vec::new();
            let mut any_tool_result = false;
            for (j, el) in inner.iter().enumerate() {
                spans.push(span_of(body, el));
                let head: Head = serde_json::from_str(el.get()).unwrap_or(Head {
                    kind: String::new(),
                    signature: None,
                    data: None,
                });
                any_tool_result |= head.kind == "tool_result";
                let sig = match head.kind.as_str() {
                    "thinking" => head.signature,
                    "redacted_thinking" => head.data,
                    _ => None,
                };
                match sig {
                    Some(s) => {
                        if j == 0 && Some(i) == last_assistant {
                            final_leading = Some(blocks.len());
                        }
                        thinking.push(Some(blocks.len()));
                        blocks.push(Block {
                            message: i,
                            index: j,
                            id: block_id(&s),
                        });
                    }
                    None => thinking.push(None),
                }
            }
            if i + 1 == req.messages.len() && m.role == "user" {
                in_tool_loop = any_tool_result;
            }
            arrays.push(Array {
                span: span_of(body, content),
                elements: spans,
                thinking,
            });
        }
        let thinking = req.thinking.map(|t| {
            let manual = serde_json::from_str::<ThinkingHead>(t.get())
                .map(|h| h.kind == "enabled")
                .unwrap_or(false);
            (span_of(body, t), manual)
        });
        Some(History {
            blocks,
            arrays,
            thinking,
            in_tool_loop,
            final_leading,
        })
    }
}

/// A request as fitted for one account.
#[derive(Debug, PartialEq)]
pub struct Fitted {
    pub body: Bytes,
    /// The blocks removed, as `messages.i.content.j` of the client's body.
    pub removed: Vec<String>,
    /// Thinking was turned off for this request (manual thinking in a tool loop whose final
    /// assistant message lost its leading block).
    pub lowered: bool,
}

/// Which blocks an account may keep: it must have produced them, and they must be one run with
/// no gap (the latest run of its blocks; blocks before it go, which the prefix check allows).
pub fn kept(blocks: &[Block], produced_here: impl Fn(&BlockId) -> bool) -> Vec<bool> {
    let mut keep = vec![false; blocks.len()];
    let Some(last) = blocks.iter().rposition(|b| produced_here(&b.id)) else {
        return keep;
    };
    let mut i = last as isize;
    while i >= 0 && produced_here(&blocks[i as usize].id) {
        keep[i as usize] = true;
        i -= 1;
    }
    keep
}

/// The request without the blocks `keep` refuses; `None` when every block stays (the body then
/// goes as the client sent it).
pub fn fit(body: &Bytes, history: &History, keep: &[bool]) -> Option<Fitted> {
    let leading_lost = history.final_leading.is_some_and(|b| !keep[b]);
    // Manual thinking in a running tool loop whose final assistant message has no leading
    // block left (lost now, or never made after an earlier move): this request goes without.
    let lower = match &history.thinking {
        Some((_, true)) => {
            history.in_tool_loop && (leading_lost || history.final_leading.is_none())
        }
        _ => false,
    };
    if keep.iter().all(|k| *k) && !lower {
        return None;
    }
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut removed = Vec::new();
    for a in &history.arrays {
        let cut: Vec<bool> = a
            .thinking
            .iter()
            .map(|t| t.is_some_and(|b| !keep[b]))
            .collect();
        if !cut.iter().any(|c| *c) {
            continue;
        }
        let mut text = Vec::with_capacity(a.span.len());
        text.push(b'[');
        let mut first = true;
        for (j, el) in a.elements.iter().enumerate() {
            if cut[j] {
                if let Some(b) = a.thinking[j] {
                    let blk = &history.blocks[b];
                    removed.push(format!("messages.{}.content.{}", blk.message, blk.index));
                }
                continue;
            }
            if !first {
                text.push(b',');
            }
            first = false;
            text.extend_from_slice(&body[el.clone()]);
        }
        text.push(b']');
        edits.push((a.span.clone(), text));
    }
    let leading_lost = history.final_leading.is_some_and(|b| !keep[b]);
    let lowered = match &history.thinking {
        Some((span, true))
            if history.in_tool_loop && (leading_lost || history.final_leading.is_none()) =>
        {
            edits.push((span.clone(), br#"{"type":"disabled"}"#.to_vec()));
            true
        }
        _ => false,
    };
    edits.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (r, text) in edits {
        out.extend_from_slice(&body[at..r.start]);
        out.extend_from_slice(&text);
        at = r.end;
    }
    out.extend_from_slice(&body[at..]);
    Some(Fitted {
        body: Bytes::from(out),
        removed,
        lowered,
    })
}

/// Why a request is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Before sending: the model is known to refuse another account's blocks.
    UpFront,
    /// After the account refused the unfitted request with a 400 about its history.
    After400,
}

/// The whole decision (specs/continuity.md): the request for `account` given what the model
/// does (`binding`), who produced each block (`producer`) and why ccs is asked. `None`: the body
/// goes as the client sent it.
pub fn fit_for(
    body: &Bytes,
    binding: Option<Binding>,
    why: Why,
    produced_here: impl Fn(&BlockId) -> bool,
) -> Option<Fitted> {
    if why == Why::UpFront && binding != Some(Binding::Reject) {
        return None;
    }
    if !may_hold_thinking(body) {
        return None;
    }
    let history = History::read(body)?;
    let keep = kept(&history.blocks, produced_here);
    fit(body, &history, &keep)
}

/// Whether a 400's message is about a thinking block the account could not read: its signature,
/// its binding, or a modification (specs/anthropic.md §9).
pub fn about_history(message: &str) -> bool {
    message.contains("in `thinking` block")
        || message.contains("in `redacted_thinking` block")
        || message.contains("cannot be modified")
        || (message.contains("Expected `thinking` or `redacted_thinking`"))
}

/// The thinking blocks an answer produced, read from what was relayed: a stream's
/// `signature_delta` events and `redacted_thinking` starts, or a whole message's content.
pub fn produced(answer: &[u8], stream: bool) -> Vec<BlockId> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        index: usize,
        delta: Option<Delta>,
        content_block: Option<Head>,
    }
    #[derive(Deserialize)]
    struct Delta {
        #[serde(rename = "type", default)]
        kind: String,
        signature: Option<String>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Vec<Head>,
    }
    let mut out = Vec::new();
    if !stream {
        if let Ok(m) = serde_json::from_slice::<Message>(answer) {
            for b in m.content {
                match (b.kind.as_str(), b.signature, b.data) {
                    ("thinking", Some(s), _) | ("redacted_thinking", _, Some(s)) => {
                        out.push(block_id(&s))
                    }
                    _ => {}
                }
            }
        }
        return out;
    }
    // Signatures by block index (a signature may come in several deltas).
    let mut sigs: Vec<(usize, String)> = Vec::new();
    for line in String::from_utf8_lossy(answer).lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(ev) = serde_json::from_str::<Event>(data.trim_start()) else {
            continue;
        };
        match (ev.kind.as_str(), ev.delta, ev.content_block) {
            ("content_block_delta", Some(d), _) if d.kind == "signature_delta" => {
                let s = d.signature.unwrap_or_default();
                match sigs.iter_mut().find(|(i, _)| *i == ev.index) {
                    Some((_, acc)) => acc.push_str(&s),
                    None => sigs.push((ev.index, s)),
                }
            }
            ("content_block_start", _, Some(b)) => match (b.kind.as_str(), b.signature, b.data) {
                ("redacted_thinking", _, Some(d)) => sigs.push((ev.index, d)),
                ("thinking", Some(s), _) if !s.is_empty() => sigs.push((ev.index, s)),
                _ => {}
            },
            _ => {}
        }
    }
    sigs.sort_by_key(|(i, _)| *i);
    out.extend(sigs.iter().map(|(_, s)| block_id(s)));
    out
}

/// Where a conversation's blocks are kept when they change: the conversation, when it last
/// produced a block (ms), and its blocks with their producers.
pub type Sink = Box<dyn Fn(&str, u64, &[(BlockId, String)]) + Send + Sync>;

/// Where the blocks an answer here produced are shared with the peers of a shared pool: the
/// conversation, the account, the new blocks.
pub type PeerSink = Box<dyn Fn(&str, &str, &[BlockId]) + Send + Sync>;

/// Conversation → (when it last produced a block, its blocks and their producers).
type Book = HashMap<String, (u64, Vec<(BlockId, String)>)>;

/// Which account produced each thinking block of each conversation: learned from the answers,
/// read when a request of the conversation goes to an account. Bounded per conversation;
/// forgotten with the conversation's binding (`retain_touched_since`).
#[derive(Default)]
pub struct Provenance {
    book: Mutex<Book>,
    sink: Option<Sink>,
    peers: OnceLock<PeerSink>,
}

/// The most blocks remembered per conversation (the oldest are forgotten first; a forgotten
/// block is one no account provably produced, so it is removed on a fitted move).
pub const BLOCKS_KEPT: usize = 4096;

impl Provenance {
    /// A book that hands every change to `sink` (the store), starting from `restored`.
    pub fn with_sink(
        restored: impl IntoIterator<Item = (String, u64, Vec<(BlockId, String)>)>,
        sink: Sink,
    ) -> Provenance {
        Provenance {
            book: Mutex::new(restored.into_iter().map(|(s, t, b)| (s, (t, b))).collect()),
            sink: Some(sink),
            peers: OnceLock::new(),
        }
    }

    /// From now on the blocks answers here produce are handed to `peers` too (once).
    pub fn tell_peers(&self, peers: PeerSink) {
        let _ = self.peers.set(peers);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An answer here produced `ids` on `account`: kept, and the peers told of the new ones.
    pub fn record(&self, session: &str, account: &str, ids: &[BlockId], now_ms: u64) {
        let new = self.heard(session, account, ids, now_ms);
        if let (Some(peers), false) = (self.peers.get(), new.is_empty()) {
            peers(session, account, &new);
        }
    }

    /// `ids` were produced on `account` (by an answer a peer relayed, or here): kept, told
    /// nobody. Returns those not known before.
    pub fn heard(
        &self,
        session: &str,
        account: &str,
        ids: &[BlockId],
        now_ms: u64,
    ) -> Vec<BlockId> {
        if ids.is_empty() {
            return Vec::new();
        }
        let mut new = Vec::new();
        let snapshot = {
            let mut book = self.book();
            let (touched, entry) = book.entry(session.to_string()).or_default();
            *touched = now_ms;
            for id in ids {
                if !entry.iter().any(|(b, _)| b == id) {
                    entry.push((*id, account.to_string()));
                    new.push(*id);
                }
            }
            if entry.len() > BLOCKS_KEPT {
                let extra = entry.len() - BLOCKS_KEPT;
                entry.drain(..extra);
            }
            self.sink
                .as_ref()
                .filter(|_| !new.is_empty())
                .map(|_| entry.clone())
        };
        if let (Some(sink), Some(blocks)) = (&self.sink, snapshot) {
            sink(session, now_ms, &blocks);
        }
        new
    }

    /// The producers of `session`'s blocks.
    pub fn of(&self, session: &str) -> HashMap<BlockId, String> {
        self.book()
            .get(session)
            .map(|(_, v)| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the conversations idle since before `since_ms`; returns them.
    pub fn retain_touched_since(&self, since_ms: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.book().retain(|s, (t, _)| {
            let keep = *t >= since_ms;
            if !keep {
                gone.push(s.clone());
            }
            keep
        });
        gone
    }

    pub fn len(&self) -> usize {
        self.book().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A block id as 32 hex digits, and back (for the stored record).
pub fn id_hex(id: &BlockId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn id_from_hex(s: &str) -> Option<BlockId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    const CONV: &str = r#"{"model":"claude-opus-4-6","thinking":{"type":"enabled","budget_tokens":1024},
"messages":[{"role":"user","content":"hi sim-tools:2"},
{"role":"assistant","content":[{"type":"thinking","thinking":"","signature":"A1"},{"type":"tool_use","id":"t1","name":"Bash","input":{}}]},
{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]},
{"role":"assistant","content":[{"type":"thinking","thinking":"","signature":"B1"}, {"type":"tool_use","id":"t2","name":"Bash","input":{}}]},
{"role":"user","content":[{"type":"tool_result","tool_use_id":"t2","content":"ok"}]}]}"#;

    #[test]
    fn blocks_are_found_with_their_places() {
        let h = History::read(CONV.as_bytes()).unwrap();
        assert_eq!(h.blocks.len(), 2);
        assert_eq!((h.blocks[0].message, h.blocks[0].index), (1, 0));
        assert_eq!((h.blocks[1].message, h.blocks[1].index), (3, 0));
        assert!(h.in_tool_loop);
        assert_eq!(h.blocks[0].id, block_id("A1"));
    }

    #[test]
    fn fitting_cuts_whole_blocks_and_leaves_every_other_byte() {
        let b = body(CONV);
        let h = History::read(&b).unwrap();
        // On A: B1 goes; the final assistant message lost its leading block under manual
        // thinking in a tool loop, so thinking is turned off.
        let keep = kept(&h.blocks, |id| *id == block_id("A1"));
        assert_eq!(keep, vec![true, false]);
        let f = fit(&b, &h, &keep).unwrap();
        assert_eq!(f.removed, vec!["messages.3.content.0"]);
        assert!(f.lowered);
        let text = std::str::from_utf8(&f.body).unwrap();
        assert!(!text.contains("B1"));
        assert!(text.contains(r#"{"type":"thinking","thinking":"","signature":"A1"}"#));
        assert!(text.contains(r#""thinking":{"type":"disabled"}"#));
        assert!(text.contains(r#"[{"type":"tool_use","id":"t2","name":"Bash","input":{}}]"#));
        let _: serde_json::Value = serde_json::from_slice(&f.body).expect("still JSON");
        // Everything the account produced stays: nothing to fit, the body goes as it came.
        assert_eq!(fit(&b, &h, &[true, true]), None);
    }

    #[test]
    fn the_kept_blocks_are_the_latest_run_without_a_gap() {
        let ids: Vec<Block> = ["A1", "B1", "A2", "A3", "B2"]
            .iter()
            .enumerate()
            .map(|(i, s)| Block {
                message: i,
                index: 0,
                id: block_id(s),
            })
            .collect();
        let mine = |id: &BlockId| [block_id("A1"), block_id("A2"), block_id("A3")].contains(id);
        assert_eq!(kept(&ids, mine), vec![false, false, true, true, false]);
        assert_eq!(kept(&ids, |_| false), vec![false; 5]);
    }

    #[test]
    fn what_an_answer_produced_is_read_from_stream_and_body() {
        let sse = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"S1\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"R1\"}}\n\n";
        assert_eq!(
            produced(sse.as_bytes(), true),
            vec![block_id("S1"), block_id("R1")]
        );
        let json = r#"{"content":[{"type":"thinking","thinking":"x","signature":"S2"},{"type":"text","text":"hi"}]}"#;
        assert_eq!(produced(json.as_bytes(), false), vec![block_id("S2")]);
    }

    #[test]
    fn a_400_about_history_is_told_from_others() {
        assert!(about_history(
            "messages.1.content.0: Invalid `signature` in `thinking` block"
        ));
        assert!(about_history(
            "`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified"
        ));
        assert!(!about_history("max_tokens: must be at most 128000"));
    }

    #[test]
    fn knowledge_prefers_config_then_learning_then_defaults() {
        let k = Knowledge::new([("claude-opus-5".to_string(), Binding::Reject)]);
        assert_eq!(k.binding("claude-opus-5-5"), Some(Binding::Reject));
        assert_eq!(k.binding("claude-sonnet-5-5"), Some(Binding::Drop));
        assert_eq!(k.binding("claude-opus-4-6"), Some(Binding::Reject));
        assert_eq!(k.binding("fable-9"), None);
        assert!(k.learn("fable-9"));
        assert!(!k.learn("fable-9"));
        assert_eq!(k.binding("fable-9"), Some(Binding::Reject));
    }
}
