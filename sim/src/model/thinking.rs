//! What the simulated Messages API reads in a conversation's history and writes into its
//! answers: signed thinking blocks bound to the organization, the model and the block's prefix,
//! the per-model rules about them (`ModelBehaviour`), the manual-thinking rule of tool loops, a
//! scripted tool loop for tests (`sim-tools:N` in the user's text), and the prompt cache's
//! breakpoints. The rules are those of specs/anthropic.md §9, as the real API states them.
//!
//! A signature is `sim1.<payload>.<mac>`: the payload names the organization, the model, a digest
//! of everything before the block (system, tools, the earlier messages and the earlier blocks of
//! its own message, thinking blocks left out, `cache_control` markers ignored), the block that
//! came before it, and a digest of its text; the mac is keyed by a secret of this simulator, so
//! nothing outside can forge or edit one. Must not: do I/O, read a clock, or keep state (the
//! cache entries live in the model).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::scenario::{ModelBehaviour, ThinkingBinding};

/// The beta that makes the API list what it dropped (`input_transformations`).
pub const BINDING_CONTROLS_BETA: &str = "thinking-binding-controls-2026-08-01";

/// One content block of an answer, as the server renders it (JSON or SSE).
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Thinking {
        thinking: String,
        signature: String,
    },
    Redacted {
        data: String,
    },
    /// The text, in the pieces a stream sends as deltas.
    Text(Vec<String>),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

impl Block {
    pub fn to_json(&self) -> Value {
        match self {
            Block::Thinking {
                thinking,
                signature,
            } => json!({"type": "thinking", "thinking": thinking, "signature": signature}),
            Block::Redacted { data } => json!({"type": "redacted_thinking", "data": data}),
            Block::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
            Block::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }
}

/// The thinking a request asks for, once the model's defaults are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// `enabled` with a budget: the final assistant turn of a tool loop must start with
    /// thinking.
    Manual,
    /// `adaptive` (or `between_tools`).
    Adaptive,
}

/// A dropped block, as `input_transformations` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub path: String,
    pub reason: &'static str,
    pub tokens: u64,
}

/// What the model made of a request's history, ready to answer it.
pub struct Reading {
    pub mode: Mode,
    pub display_omitted: bool,
    pub dropped: Vec<Dropped>,
    /// The conversation before the answer, as the prefix digest of the answer's first block.
    hasher: Sha256,
    /// The identity of the last thinking block the model kept.
    last_kept: Option<String>,
    /// The tool call the script asks for next: the tool's name and the step's number.
    pub tool_step: Option<(String, u32)>,
}

/// A cache breakpoint: the digest of everything up to it, and its length in tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Breakpoint {
    pub digest: [u8; 32],
    pub tokens: u64,
    pub one_hour: bool,
}

fn hex16(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect()
}

/// The identity of a thinking block: a digest of its signature (or a redacted block's data).
pub fn identity(sig: &str) -> String {
    hex16(&Sha256::digest(sig.as_bytes()))
}

/// A block as the prefix digest reads it: without `cache_control`, in serde_json's canonical
/// form (the same value always gives the same bytes).
fn canonical(v: &Value) -> Vec<u8> {
    match v {
        Value::Object(m) if m.contains_key("cache_control") => {
            let mut m = m.clone();
            m.remove("cache_control");
            serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
        }
        _ => serde_json::to_vec(v).unwrap_or_default(),
    }
}

/// A message's content as blocks (a plain string is one text block).
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::Array(a) => a.clone(),
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        _ => Vec::new(),
    }
}

fn kind(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_thinking(block: &Value) -> bool {
    matches!(kind(block), "thinking" | "redacted_thinking")
}

/// Signs a block made now: bound to `org`, `model`, the prefix in `hasher`, the block before it,
/// and its text.
pub fn sign(
    key: &[u8],
    org: &str,
    model: &str,
    hasher: &Sha256,
    prev: Option<&str>,
    text: &str,
) -> String {
    let payload = json!({
        "o": org,
        "m": model,
        "p": hex16(&hasher.clone().finalize()),
        "q": prev.unwrap_or(""),
        "c": hex16(&Sha256::digest(text.as_bytes())),
    })
    .to_string();
    let mac = Sha256::new()
        .chain_update(key)
        .chain_update(payload.as_bytes())
        .finalize();
    format!(
        "sim1.{}.{}",
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        URL_SAFE_NO_PAD.encode(&mac[..16])
    )
}

struct Signed {
    org: String,
    model: String,
    prefix: String,
    prev: String,
    content: String,
}

fn verify(key: &[u8], sig: &str) -> Option<Signed> {
    let rest = sig.strip_prefix("sim1.")?;
    let (payload, mac) = rest.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let want = Sha256::new()
        .chain_update(key)
        .chain_update(&payload)
        .finalize();
    if URL_SAFE_NO_PAD.decode(mac).ok()?.as_slice() != &want[..16] {
        return None;
    }
    let v: Value = serde_json::from_slice(&payload).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Some(Signed {
        org: s("o"),
        model: s("m"),
        prefix: s("p"),
        prev: s("q"),
        content: s("c"),
    })
}

fn bad(message: String) -> ApiError {
    ApiError::anthropic(400, "invalid_request_error", &message)
}

/// The exact 400 of a block that cannot be read (specs/anthropic.md §9).
pub fn invalid_block(path: &str, redacted: bool) -> String {
    if redacted {
        format!("{path}: Invalid `data` in `redacted_thinking` block")
    } else {
        format!("{path}: Invalid `signature` in `thinking` block")
    }
}

/// The exact 400 of a block whose prefix changed, under `prefix_mismatch_behavior: error`.
pub fn prefix_mismatch(path: &str, redacted: bool) -> String {
    format!(
        "{}. The block is bound to a different conversation. Remove the block, or set \
         `thinking.block_binding.prefix_mismatch_behavior` to \"drop_block\".",
        invalid_block(path, redacted)
    )
}

pub const LATEST_MODIFIED: &str =
    "`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified";

/// Reads a request's thinking settings and history for `org` on `model`: the 400 it earns, or
/// what to answer with. `controls`: the request named the binding-controls beta.
pub fn read(
    body: &Value,
    b: &ModelBehaviour,
    key: &[u8],
    org: &str,
    model: &str,
    controls: bool,
) -> Result<Reading, ApiError> {
    let thinking = body.get("thinking");
    let asked = thinking.and_then(|t| t.get("type")).and_then(Value::as_str);
    if let Some(t) = asked {
        if !b.thinking_types.iter().any(|x| x == t) {
            return Err(bad(format!(
                "thinking.type: Input tag '{t}' is not supported by {model}; expected one of: {}",
                b.thinking_types
                    .iter()
                    .map(|x| format!("'{x}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mode = match asked {
        Some("enabled") => Mode::Manual,
        Some("adaptive") | Some("between_tools") => Mode::Adaptive,
        Some(_) => Mode::Off,
        None if b.always_thinking => Mode::Adaptive,
        None => Mode::Off,
    };
    let display_omitted = thinking
        .and_then(|t| t.get("display"))
        .and_then(Value::as_str)
        == Some("omitted");
    let drop_on_prefix = thinking
        .and_then(|t| t.pointer("/block_binding/prefix_mismatch_behavior"))
        .and_then(Value::as_str)
        == Some("drop_block")
        && controls;

    let mut hasher = Sha256::new();
    for part in ["system", "tools"] {
        hasher.update(part.as_bytes());
        match body.get(part) {
            Some(Value::Array(items)) => items.iter().for_each(|i| hasher.update(canonical(i))),
            Some(v) => hasher.update(canonical(v)),
            None => {}
        }
    }
    let messages: Vec<Value> = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let latest_assistant = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    let mut dropped = Vec::new();
    let mut last_kept: Option<String> = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        hasher.update(role.as_bytes());
        let content = m.get("content").map(blocks).unwrap_or_default();
        for (j, block) in content.iter().enumerate() {
            if !is_thinking(block) {
                hasher.update(canonical(block));
                continue;
            }
            let path = format!("messages.{i}.content.{j}");
            let redacted = kind(block) == "redacted_thinking";
            let (sig, text) = if redacted {
                (block.get("data"), "")
            } else {
                (
                    block.get("signature"),
                    block.get("thinking").and_then(Value::as_str).unwrap_or(""),
                )
            };
            let sig = sig.and_then(Value::as_str).unwrap_or("");
            let Some(signed) = verify(key, sig) else {
                return Err(bad(invalid_block(&path, redacted)));
            };
            if signed.content != hex16(&Sha256::digest(text.as_bytes())) {
                return Err(bad(if Some(i) == latest_assistant {
                    format!("{path}: {LATEST_MODIFIED}")
                } else {
                    invalid_block(&path, redacted)
                }));
            }
            let tokens = (canonical(block).len() as u64 / 4).max(1);
            let mut drop = |reason| {
                dropped.push(Dropped {
                    path: path.clone(),
                    reason,
                    tokens,
                })
            };
            let foreign_org = signed.org != org;
            let foreign_model = !signed.model.eq_ignore_ascii_case(model);
            if foreign_org || foreign_model {
                let reason = if foreign_org {
                    "organization_binding_mismatch"
                } else {
                    "model_binding_mismatch"
                };
                match b.thinking_binding {
                    ThinkingBinding::Drop => {
                        drop(reason);
                        continue;
                    }
                    ThinkingBinding::Accept if !foreign_model => {}
                    _ => return Err(bad(invalid_block(&path, redacted))),
                }
            }
            if b.prefix_check {
                let prefix_ok = signed.prefix == hex16(&hasher.clone().finalize());
                // A block's predecessor must be the last block kept before it; with none kept
                // before it, blocks were removed from the start, which is fine.
                let chain_ok = match &last_kept {
                    Some(prev) => signed.prev == *prev,
                    None => true,
                };
                if !(prefix_ok && chain_ok) {
                    if drop_on_prefix {
                        drop("prefix_binding_mismatch");
                        continue;
                    }
                    return Err(bad(prefix_mismatch(&path, redacted)));
                }
            }
            last_kept = Some(identity(sig));
        }
    }
    if mode == Mode::Manual {
        manual_rule(&messages)?;
    }
    hasher.update(b"assistant");
    Ok(Reading {
        mode,
        display_omitted,
        dropped,
        hasher,
        last_kept,
        tool_step: tool_step(body, &messages),
    })
}

/// Manual thinking: in a running tool loop (the last message returns tool results), the final
/// assistant message must start with a thinking block.
fn manual_rule(messages: &[Value]) -> Result<(), ApiError> {
    let Some(last) = messages.last() else {
        return Ok(());
    };
    let returns_tools = last.get("role").and_then(Value::as_str) == Some("user")
        && blocks(last.get("content").unwrap_or(&Value::Null))
            .iter()
            .any(|b| kind(b) == "tool_result");
    if !returns_tools {
        return Ok(());
    }
    let Some(i) = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
    else {
        return Ok(());
    };
    let content = blocks(messages[i].get("content").unwrap_or(&Value::Null));
    let first = content.first().map(kind).unwrap_or("nothing");
    if matches!(first, "thinking" | "redacted_thinking") {
        return Ok(());
    }
    Err(bad(format!(
        "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found \
         `{first}`. When `thinking` is enabled, a final `assistant` message must start with a \
         thinking block (preceding the lastmost set of `tool_use` and `tool_result` blocks). \
         To avoid this requirement, disable `thinking`."
    )))
}

/// The test script: a user's text naming `sim-tools:N` asks for N tool calls before the final
/// answer; the number of tool results since that text says which step is next.
fn tool_step(body: &Value, messages: &[Value]) -> Option<(String, u32)> {
    let tools = body.get("tools")?.as_array()?;
    let name = tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .find(|n| *n == "Bash")
        .or_else(|| {
            tools
                .iter()
                .find_map(|t| t.get("name").and_then(Value::as_str))
        })?;
    let (at, wanted) = messages.iter().enumerate().rev().find_map(|(i, m)| {
        if m.get("role").and_then(Value::as_str) != Some("user") {
            return None;
        }
        let text: String = blocks(m.get("content")?)
            .iter()
            .filter(|b| kind(b) == "text")
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let n = text.split("sim-tools:").nth(1)?;
        let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
        Some((i, digits.parse::<u32>().ok()?))
    })?;
    let results = messages[at + 1..]
        .iter()
        .flat_map(|m| blocks(m.get("content").unwrap_or(&Value::Null)))
        .filter(|b| kind(b) == "tool_result")
        .count() as u32;
    (results < wanted).then(|| (name.to_string(), results + 1))
}

/// The answer's content: its thinking (when on), then its text or its tool call. `id` makes the
/// tool call's id unique.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    r: &mut Reading,
    b: &ModelBehaviour,
    key: &[u8],
    org: &str,
    model: &str,
    text: Vec<String>,
    id: u64,
) -> Vec<Block> {
    let mut out = Vec::new();
    let think = |r: &mut Reading, out: &mut Vec<Block>, what: &str| {
        let thought = if r.display_omitted || b.redacted {
            String::new()
        } else {
            format!("{what} (simulated thinking)")
        };
        let sig = sign(key, org, model, &r.hasher, r.last_kept.as_deref(), &thought);
        r.last_kept = Some(identity(&sig));
        out.push(if b.redacted {
            Block::Redacted { data: sig }
        } else {
            Block::Thinking {
                thinking: thought,
                signature: sig,
            }
        });
    };
    if r.mode != Mode::Off {
        think(r, &mut out, "Considering the request");
    }
    match r.tool_step.clone() {
        Some((name, step)) => {
            if b.interleaved && r.mode != Mode::Off {
                let words = Block::Text(vec![format!("Step {step}.")]);
                r.hasher.update(canonical(&words.to_json()));
                out.push(words);
                think(r, &mut out, "Choosing the tool");
            }
            out.push(Block::ToolUse {
                id: format!("toolu_sim_{id:012x}_{step}"),
                name,
                input: json!({"command": format!("echo ccs-sim-step-{step}"), "description": format!("Print step {step}")}),
            });
        }
        None => out.push(Block::Text(text)),
    }
    out
}

/// The breakpoints of a request's prompt cache, in order: tools, system, messages; each
/// `cache_control` marks the end of a cacheable prefix.
pub fn breakpoints(body: &Value) -> Vec<Breakpoint> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut out = Vec::new();
    let mut visit = |v: &Value, hasher: &mut Sha256, bytes: &mut u64| {
        let c = canonical(v);
        *bytes += c.len() as u64;
        hasher.update(&c);
        if let Some(cc) = v.get("cache_control") {
            out.push(Breakpoint {
                digest: hasher.clone().finalize().into(),
                tokens: *bytes / 4,
                one_hour: cc.get("ttl").and_then(Value::as_str) == Some("1h"),
            });
        }
    };
    for part in ["tools", "system"] {
        match body.get(part) {
            Some(Value::Array(items)) => {
                items.iter().for_each(|i| visit(i, &mut hasher, &mut bytes))
            }
            Some(v @ Value::String(_)) => visit(v, &mut hasher, &mut bytes),
            _ => {}
        }
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        hasher.update(role.as_bytes());
        for block in m.get("content").map(blocks).unwrap_or_default() {
            visit(&block, &mut hasher, &mut bytes);
        }
    }
    out
}
