//! The patch formats: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic
//! merge patch with the directives kubectl sends (`$patch`, `$setElementOrder`,
//! `$retainKeys`, `$deleteFromPrimitiveList`). The structural merge here is also the one
//! server-side apply uses, without directives.

use serde_json::{Map, Value};

use super::resources::{ListType, ResourceType};
use super::status::ApiError;

/// A patch body and its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchKind {
    /// The kind for a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON patch to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| ApiError::Invalid {
        message: format!("the JSON patch could not be applied: {e}"),
        details: None,
    })?;
    Ok(out)
}

/// Applies a JSON merge patch to `doc`.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

/// What the structural merge needs to know about the object's schema.
pub struct Merger<'a> {
    /// The resource type (list types come from it).
    pub rt: &'a ResourceType,
    /// The version whose schema applies.
    pub version: &'a str,
    /// Strategic merge patch (directives honoured, first key only) or apply (no directives).
    pub strategic: bool,
}

impl Merger<'_> {
    /// Merges `patch` into `orig`.
    pub fn merge(&self, orig: &Value, patch: &Value) -> Result<Value, ApiError> {
        Ok(self
            .merge_value(Some(orig), patch, &mut Vec::new())?
            .unwrap_or(Value::Null))
    }

    fn merge_value(
        &self,
        orig: Option<&Value>,
        patch: &Value,
        path: &mut Vec<String>,
    ) -> Result<Option<Value>, ApiError> {
        match patch {
            Value::Object(p) => {
                let empty = Map::new();
                let o = orig.and_then(Value::as_object).unwrap_or(&empty);
                self.merge_map(o, p, path).map(|m| m.map(Value::Object))
            }
            Value::Array(items) => {
                let orig_items = orig
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                self.merge_list(orig_items, items, path)
                    .map(|l| Some(Value::Array(l)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Merges maps; `None` means the patch deleted the map (`$patch: delete`).
    fn merge_map(
        &self,
        orig: &Map<String, Value>,
        patch: &Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Option<Map<String, Value>>, ApiError> {
        if self.strategic {
            match patch.get("$patch").and_then(Value::as_str) {
                Some("delete") => return Ok(None),
                Some("replace") => return Ok(Some(strip_directives(patch))),
                _ => {}
            }
        }
        let mut out = orig.clone();
        let mut orders = Vec::new();
        for (key, value) in patch {
            if self.strategic && key.starts_with('$') {
                if let Some(field) = key.strip_prefix("$setElementOrder/") {
                    orders.push((field.to_string(), value));
                } else if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
                    let remove = value.as_array().cloned().unwrap_or_default();
                    if let Some(Value::Array(list)) = out.get_mut(field) {
                        list.retain(|v| !remove.contains(v));
                    }
                }
                continue;
            }
            if value.is_null() {
                out.remove(key);
                continue;
            }
            path.push(key.clone());
            let merged = self.merge_value(orig.get(key), value, path)?;
            path.pop();
            match merged {
                Some(v) => out.insert(key.clone(), v),
                None => out.remove(key),
            };
        }
        if self.strategic {
            if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
                out.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
            }
            for (field, order) in orders {
                path.push(field.clone());
                let keys = self.map_keys(path);
                path.pop();
                if let (Some(Value::Array(list)), Some(order)) =
                    (out.get_mut(&field), order.as_array())
                {
                    reorder(list, order, keys.as_deref());
                }
            }
        }
        Ok(Some(out))
    }

    /// The key fields of the map-list at `path`, if it is one.
    fn map_keys(&self, path: &[String]) -> Option<Vec<String>> {
        match self.rt.list_type(self.version, path) {
            ListType::Map(keys) if self.strategic => keys.into_iter().next().map(|k| vec![k]),
            ListType::Map(keys) => Some(keys),
            _ => None,
        }
    }

    fn merge_list(
        &self,
        orig: &[Value],
        patch: &[Value],
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, ApiError> {
        let list_type = self.rt.list_type(self.version, path);
        let replace = self.strategic
            && patch
                .iter()
                .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"));
        match list_type {
            _ if replace => Ok(patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .map(strip_value)
                .collect()),
            ListType::Atomic => Ok(patch
                .iter()
                .map(|v| {
                    if self.strategic {
                        strip_value(v)
                    } else {
                        v.clone()
                    }
                })
                .collect()),
            ListType::Set => {
                let mut out = orig.to_vec();
                for v in patch {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Ok(out)
            }
            ListType::Map(_) => {
                let keys = self.map_keys(path).unwrap_or_default();
                let mut out = orig.to_vec();
                for item in patch {
                    let pos = out.iter().position(|o| same_key(o, item, &keys));
                    let delete = self.strategic
                        && item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            out.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => match self.merge_value(Some(&out[i]), item, path)? {
                            Some(v) => out[i] = v,
                            None => {
                                out.remove(i);
                            }
                        },
                        (None, false) => out.push(strip_value(item)),
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Whether two list elements have the same values for every key field.
pub fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    !keys.is_empty() && keys.iter().all(|k| a.get(k) == b.get(k))
}

/// Puts the elements named in `order` first, in that order; the others keep their places after.
fn reorder(list: &mut Vec<Value>, order: &[Value], keys: Option<&[String]>) {
    let rank = |v: &Value| {
        order.iter().position(|o| match keys {
            Some(keys) => same_key(v, o, keys),
            None => o == v,
        })
    };
    let (mut ranked, rest): (Vec<Value>, Vec<Value>) =
        list.drain(..).partition(|v| rank(v).is_some());
    ranked.sort_by_key(|v| rank(v));
    ranked.extend(rest);
    *list = ranked;
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip_directives(m)),
        Value::Array(a) => Value::Array(a.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::resources::Registry;

    fn pods() -> std::sync::Arc<ResourceType> {
        Registry::builtin().find("", "v1", "pods").expect("pods")
    }

    fn smp(orig: Value, patch: Value) -> Value {
        let rt = pods();
        Merger {
            rt: &rt,
            version: "v1",
            strategic: true,
        }
        .merge(&orig, &patch)
        .expect("patch applies")
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}, "spec": {"containers": containers}})
    }

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let orig = pod(
            json!([{"name": "app", "image": "v1", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "s"}]),
        );
        let out = smp(
            orig,
            json!({"spec": {"containers": [{"name": "app", "image": "v2", "ports": [{"containerPort": 81}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "image": "v2", "ports": [{"containerPort": 80}, {"containerPort": 81}]}, {"name": "side", "image": "s"}])
        );
    }

    #[test]
    fn patch_delete_directive_removes_the_keyed_element() {
        let orig = pod(json!([{"name": "app"}, {"name": "side"}]));
        let out = smp(
            orig,
            json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "app"}]));
    }

    #[test]
    fn set_element_order_reorders_as_kubectl_sends_it() {
        let orig = pod(json!([{"name": "a"}, {"name": "b"}]));
        let out = smp(
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}], "containers": [{"name": "c"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c"}, {"name": "b"}, {"name": "a"}])
        );
    }

    #[test]
    fn list_replace_retain_keys_and_primitive_deletes() {
        let orig = pod(json!([{"name": "a"}, {"name": "b"}]));
        let out = smp(
            orig.clone(),
            json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
        let out = smp(
            orig.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            orig,
            json!({"spec": {"$retainKeys": ["containers"], "hostNetwork": null}}),
        );
        assert_eq!(out["spec"].as_object().map(|m| m.len()), Some(1));
    }

    #[test]
    fn atomic_lists_are_replaced_and_null_deletes() {
        let orig = json!({"spec": {"tolerations": [{"key": "a"}], "nodeName": "n"}});
        let out = smp(
            orig,
            json!({"spec": {"tolerations": [{"key": "b"}], "nodeName": null}}),
        );
        assert_eq!(out, json!({"spec": {"tolerations": [{"key": "b"}]}}));
    }
}
