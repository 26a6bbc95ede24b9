//! Server-side printing (`meta.k8s.io/v1` Table), which `kubectl get` asks for: Name and
//! Age, plus a CRD's additionalPrinterColumns.

use bytes::Bytes;
use serde_json::{Value, json};

use super::resources::ResourceType;

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// The Table for `items`.
pub fn table(rt: &ResourceType, version: &str, items: &[Value], rv: u64) -> Value {
    let columns = rt.printer_columns.get(version).cloned().unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let mut has_age = false;
    for c in &columns {
        has_age |= c["name"] == "Age";
        defs.push(json!({"name": c["name"], "type": c["type"], "format": c.get("format").cloned().unwrap_or(json!("")), "description": c.get("description").cloned().unwrap_or(json!("")), "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
    }
    if !has_age {
        defs.push(json!({"name": "Age", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let mut cells = vec![obj["metadata"]["name"].clone()];
            for c in &columns {
                let v = eval(obj, c["jsonPath"].as_str().unwrap_or(""));
                cells.push(if c["type"] == "date" { age(&v) } else { v });
            }
            if !has_age {
                cells.push(age(&obj["metadata"]["creationTimestamp"]));
            }
            let meta = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
            json!({"cells": cells, "object": meta})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": defs, "rows": rows})
}

/// A watch event line with its object turned into a one-row Table.
pub fn watch_event(rt: &ResourceType, version: &str, line: &Bytes) -> Bytes {
    let Ok(mut ev) = serde_json::from_slice::<Value>(line) else {
        return line.clone();
    };
    if matches!(ev["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED")) {
        let rv = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        ev["object"] = table(rt, version, std::slice::from_ref(&ev["object"]), rv);
    }
    let mut s = ev.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// kubectl's short durations: `45s`, `3m20s`, `5h`, `2d`.
fn age(ts: &Value) -> Value {
    let Some(ts) = ts.as_str() else {
        return json!("<unknown>");
    };
    let Ok(t) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
    else {
        return json!("<invalid>");
    };
    let s = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let text = match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    };
    json!(text)
}

/// The subset of JSONPath printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
fn eval(obj: &Value, path: &str) -> Value {
    let mut cur = vec![obj.clone()];
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        let (seg, tail) = next_segment(rest);
        rest = tail;
        cur = cur.iter().flat_map(|v| step(v, seg)).collect();
    }
    match cur.len() {
        0 => Value::Null,
        1 => cur.pop().unwrap_or(Value::Null),
        _ => json!(
            cur.iter()
                .map(|v| v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn next_segment(s: &str) -> (&str, &str) {
    if s.starts_with('[') {
        let end = s.find(']').map(|i| i + 1).unwrap_or(s.len());
        return (&s[..end], s[end..].trim_start_matches('.'));
    }
    let end = s.find(['.', '[']).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches('.'))
}

fn step(v: &Value, seg: &str) -> Vec<Value> {
    let Some(inner) = seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return v.get(seg).cloned().into_iter().collect();
    };
    let items = v.as_array().cloned().unwrap_or_default();
    if inner == "*" {
        return items;
    }
    if let Ok(i) = inner.parse::<usize>() {
        return items.get(i).cloned().into_iter().collect();
    }
    let Some(cond) = inner.strip_prefix("?(@.").and_then(|c| c.strip_suffix(')')) else {
        return vec![];
    };
    let Some((k, want)) = cond.split_once("==") else {
        return vec![];
    };
    let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
    items
        .into_iter()
        .filter(|i| i.get(k.trim()).and_then(Value::as_str) == Some(want))
        .collect()
}
