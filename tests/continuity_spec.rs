//! Walks `specs/continuity.toml` against the pure fitting decision (`continuity::fit_for`):
//! each row builds a conversation whose thinking blocks were produced by the accounts it names,
//! and the request fitted for `to` must lose exactly the blocks the row removes (every other
//! byte kept), and go without thinking exactly when the row says.

use bytes::Bytes;
use ccs::proxy::continuity::{block_id, fit_for, Binding, Why};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Table {
    row: Vec<Row>,
}

#[derive(Deserialize, Debug)]
struct Row {
    name: String,
    blocks: Vec<String>,
    to: String,
    binding: String,
    why: String,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default, rename = "loop")]
    tool_loop: bool,
    #[serde(default)]
    untouched: bool,
    #[serde(default)]
    removed: Vec<usize>,
    #[serde(default)]
    lowered: bool,
}

fn signature(i: usize, owner: &str) -> String {
    format!("sig-{owner}-{i}")
}

/// A conversation with one assistant message per block, each opening with its thinking block.
fn body(row: &Row) -> String {
    let mut messages = vec![json!({"role": "user", "content": "go"})];
    for (i, owner) in row.blocks.iter().enumerate() {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": signature(i, owner)},
            {"type": "tool_use", "id": format!("t{i}"), "name": "Bash", "input": {}},
        ]}));
        if i + 1 < row.blocks.len() || row.tool_loop {
            messages.push(json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": format!("t{i}"), "content": "ok"}
            ]}));
        }
    }
    if !row.tool_loop {
        messages.push(json!({"role": "user", "content": "next"}));
    }
    let mut b = json!({"model": "m", "messages": messages});
    if let Some(t) = &row.thinking {
        b["thinking"] = match t.as_str() {
            "enabled" => json!({"type": "enabled", "budget_tokens": 1024}),
            other => json!({"type": other}),
        };
    }
    b.to_string()
}

fn signatures(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["signature"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_row_of_the_continuity_table_holds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/continuity.toml");
    let table: Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(table.row.len() >= 10);
    for row in &table.row {
        let sent = Bytes::from(body(row));
        let binding = match row.binding.as_str() {
            "reject" => Some(Binding::Reject),
            "drop" => Some(Binding::Drop),
            "accept" => Some(Binding::Accept),
            "unknown" => None,
            other => panic!("{}: binding {other}", row.name),
        };
        let why = match row.why.as_str() {
            "up_front" => Why::UpFront,
            "after_400" => Why::After400,
            other => panic!("{}: why {other}", row.name),
        };
        let mine: Vec<_> = row
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == row.to)
            .map(|(i, o)| block_id(&signature(i, o)))
            .collect();
        let fitted = fit_for(&sent, binding, why, |id| mine.contains(id));
        if row.untouched {
            assert_eq!(fitted, None, "{}", row.name);
            continue;
        }
        let f = fitted.unwrap_or_else(|| panic!("{}: not fitted", row.name));
        let want: Vec<String> = row
            .blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| !row.removed.contains(i))
            .map(|(i, o)| signature(i, o))
            .collect();
        assert_eq!(signatures(&f.body), want, "{}", row.name);
        assert_eq!(f.removed.len(), row.removed.len(), "{}", row.name);
        assert_eq!(f.lowered, row.lowered, "{}", row.name);
        // Nothing but the removed blocks (and, when lowered, the setting) changed.
        let strip = |b: &[u8]| {
            let mut v: Value = serde_json::from_slice(b).unwrap();
            for m in v["messages"].as_array_mut().unwrap() {
                if let Some(c) = m["content"].as_array_mut() {
                    c.retain(|b| b["type"] != "thinking");
                }
            }
            v.as_object_mut().unwrap().remove("thinking");
            v
        };
        assert_eq!(strip(&f.body), strip(&sent), "{}", row.name);
    }
}
