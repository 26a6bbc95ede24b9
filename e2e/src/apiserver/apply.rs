//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply: who owns
//! which field, conflicts between managers, and removal of fields a manager stops applying.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::Merger;
use super::resources::{ListType, ResourceType};
use super::status::ApiError;

/// A field path in FieldsV1 element form (`f:spec`, `k:{"name":"a"}`, `v:"x"`, `.`).
pub type FieldPath = Vec<String>;

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: BTreeSet<FieldPath>,
}

/// What a write is and who makes it.
pub struct Writer<'a> {
    /// The resource type.
    pub rt: &'a ResourceType,
    /// The API version of the request.
    pub version: &'a str,
    /// The field manager.
    pub manager: &'a str,
    /// `""` or `"status"`.
    pub subresource: &'a str,
    /// The current time, RFC 3339.
    pub now: &'a str,
}

impl Writer<'_> {
    /// The leaf fields of `obj` this write can own (status only on the status subresource).
    pub fn field_set(&self, obj: &Value) -> BTreeSet<FieldPath> {
        let mut out = BTreeSet::new();
        let Some(map) = obj.as_object() else {
            return out;
        };
        for (k, v) in map {
            let in_scope = match k.as_str() {
                "apiVersion" | "kind" => false,
                "status" => !self.rt.status_subresource || self.subresource == "status",
                "metadata" => self.subresource.is_empty(),
                _ => self.subresource.is_empty() || !self.rt.status_subresource,
            };
            if !in_scope {
                continue;
            }
            let mut path = vec![format!("f:{k}")];
            if k == "metadata" {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(v) = v.get(field) {
                        path.push(format!("f:{field}"));
                        self.collect(
                            v,
                            &mut path,
                            &mut vec!["metadata".into(), field.into()],
                            &mut out,
                        );
                        path.pop();
                    }
                }
                continue;
            }
            self.collect(v, &mut path, &mut vec![k.clone()], &mut out);
        }
        out
    }

    fn collect(
        &self,
        v: &Value,
        path: &mut FieldPath,
        fields: &mut Vec<String>,
        out: &mut BTreeSet<FieldPath>,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    path.push(format!("f:{k}"));
                    fields.push(k.clone());
                    self.collect(v, path, fields, out);
                    fields.pop();
                    path.pop();
                }
            }
            Value::Array(items) => match self.rt.list_type(self.version, fields) {
                ListType::Atomic => {
                    out.insert(path.clone());
                }
                ListType::Set => {
                    for item in items {
                        let mut p = path.clone();
                        p.push(format!("v:{item}"));
                        out.insert(p);
                    }
                }
                ListType::Map(keys) => {
                    for item in items {
                        let key: Map<String, Value> = keys
                            .iter()
                            .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                            .collect();
                        path.push(format!("k:{}", Value::Object(key)));
                        let mut dot = path.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        self.collect(item, path, fields, out);
                        path.pop();
                    }
                }
            },
            _ => {
                out.insert(path.clone());
            }
        }
    }

    /// Records a create, update or patch: the manager takes the fields it changed.
    pub fn record_update(&self, old: Option<&Value>, new: &mut Value) {
        let mut entries = old.map(entries_of).unwrap_or_default();
        let new_set = self.field_set(new);
        let old_set = old.map(|o| self.field_set(o)).unwrap_or_default();
        let changed: BTreeSet<FieldPath> = new_set
            .iter()
            .filter(|p| {
                old.is_none() || !old_set.contains(*p) || lookup(old.unwrap(), p) != lookup(new, p)
            })
            .cloned()
            .collect();
        for e in entries.iter_mut() {
            e.fields.retain(|p| {
                !(changed.contains(p)
                    || (old_set.contains(p)
                        && !new_set.contains(p)
                        && e.subresource == self.subresource))
            });
        }
        if !changed.is_empty() {
            let entry = self.entry(&mut entries, "Update");
            entry.fields.extend(changed);
        }
        store_entries(new, entries);
    }

    /// Server-side apply of `applied` onto `live` (None: the object does not exist yet).
    pub fn apply(
        &self,
        live: Option<&Value>,
        applied: &Value,
        force: bool,
    ) -> Result<Value, ApiError> {
        let base = live.cloned().unwrap_or_else(|| json!({}));
        let mut entries = entries_of(&base);
        let applied_set = self.field_set(applied);
        self.check_conflicts(&base, applied, &applied_set, &mut entries, force)?;

        let previous: BTreeSet<FieldPath> = entries
            .iter()
            .filter(|e| {
                e.manager == self.manager
                    && e.operation == "Apply"
                    && e.subresource == self.subresource
            })
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let others: BTreeSet<FieldPath> = entries
            .iter()
            .filter(|e| {
                !(e.manager == self.manager
                    && e.operation == "Apply"
                    && e.subresource == self.subresource)
            })
            .flat_map(|e| e.fields.iter().cloned())
            .collect();

        let merger = Merger {
            rt: self.rt,
            version: self.version,
            strategic: false,
        };
        let mut merged = merger.merge(&base, applied)?;
        let mut removed: Vec<&FieldPath> = previous
            .iter()
            .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
            .collect();
        // Deepest first, so an element's fields go before the element itself.
        removed.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for path in removed {
            remove_path(&mut merged, path);
        }
        let entry = self.entry(&mut entries, "Apply");
        entry.fields = applied_set;
        store_entries(&mut merged, entries);
        Ok(merged)
    }

    /// Fails with 409 where another manager owns a field the applied config sets to a
    /// different value; with `force`, takes those fields from their owners instead.
    fn check_conflicts(
        &self,
        live: &Value,
        applied: &Value,
        set: &BTreeSet<FieldPath>,
        entries: &mut [Entry],
        force: bool,
    ) -> Result<(), ApiError> {
        let mut conflicts = Vec::new();
        for e in entries.iter_mut() {
            if e.manager == self.manager && e.operation == "Apply" {
                continue;
            }
            let clashing: Vec<FieldPath> = e
                .fields
                .iter()
                .filter(|p| set.contains(*p) && p.last().map(String::as_str) != Some("."))
                .filter(|p| lookup(live, p) != lookup(applied, p))
                .cloned()
                .collect();
            if force {
                e.fields.retain(|p| !clashing.contains(p));
            } else {
                conflicts.extend(
                    clashing
                        .into_iter()
                        .map(|p| (e.manager.clone(), e.api_version.clone(), p)),
                );
            }
        }
        if conflicts.is_empty() {
            return Ok(());
        }
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, v, p)| json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": dotted(p)}))
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, v, p)| format!("- conflict with \"{m}\" using {v}: {}", dotted(p)))
            .collect();
        let message = if conflicts.len() == 1 {
            let (m, v, p) = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with \"{m}\" using {v}: {}",
                dotted(p)
            )
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        Err(ApiError::Conflict {
            message,
            details: Some(json!({"causes": causes})),
        })
    }

    fn entry<'e>(&self, entries: &'e mut Vec<Entry>, operation: &str) -> &'e mut Entry {
        let api_version = self.rt.api_version(self.version);
        let pos = entries.iter().position(|e| {
            e.manager == self.manager
                && e.operation == operation
                && e.subresource == self.subresource
        });
        let i = pos.unwrap_or_else(|| {
            entries.push(Entry {
                manager: self.manager.into(),
                operation: operation.into(),
                api_version: api_version.clone(),
                time: String::new(),
                subresource: self.subresource.into(),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        });
        let e = &mut entries[i];
        e.time = self.now.into();
        e.api_version = api_version;
        e
    }
}

/// `.spec.ports[port=80,protocol="TCP"].name`, the form conflict messages use.
fn dotted(path: &FieldPath) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// The value at a field path, if present.
fn lookup<'v>(obj: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    let mut cur = obj;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|item| **item == want)?;
        }
    }
    Some(cur)
}

/// Removes the field, element or set value at `path`.
fn remove_path(obj: &mut Value, path: &FieldPath) {
    let (target, parent) = match path.last().map(String::as_str) {
        Some(".") => (&path[path.len() - 2], &path[..path.len() - 2]),
        Some(_) => (&path[path.len() - 1], &path[..path.len() - 1]),
        None => return,
    };
    let Some(container) = lookup_mut(obj, parent) else {
        return;
    };
    if let Some(f) = target.strip_prefix("f:") {
        if let Some(m) = container.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = target.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
        if let Some(a) = container.as_array_mut() {
            a.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(v) = target.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        if let Some(a) = container.as_array_mut() {
            a.retain(|item| *item != want);
        }
    }
}

fn lookup_mut<'v>(obj: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = obj;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields,
            }
        })
        .collect()
}

fn parse_fields(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        path.push(k.clone());
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(path.clone());
        } else {
            parse_fields(child, path, out);
        }
        path.pop();
    }
}

fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for el in path {
            cur = cur
                .as_object_mut()
                .expect("fields are objects")
                .entry(el.clone())
                .or_insert_with(|| json!({}));
        }
    }
    root
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
    {
        if list.is_empty() {
            meta.as_object_mut().map(|m| m.remove("managedFields"));
        } else {
            meta["managedFields"] = Value::Array(list);
        }
    }
}
