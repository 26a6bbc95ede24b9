//! OpenAPI v3 documents: the root index and one document per group-version, with a
//! schema per kind (CRDs: their openAPIV3Schema) and the operations kubectl inspects
//! (whether PATCH takes `fieldValidation`, which patch types it accepts).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::resources::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `/openapi/v3`: where each group-version's document is.
pub fn root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            let path = gv_path(&group, &v);
            let hash = content_hash(&group_version(reg, &group, &v));
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn content_hash(doc: &Value) -> String {
    let mut h = DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// The document for `api/v1` or `apis/<group>/<version>` (the path after `/openapi/v3/`).
pub fn document(reg: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let doc = group_version(reg, &group, &version);
    doc["paths"]
        .as_object()
        .is_some_and(|p| !p.is_empty())
        .then_some(doc)
}

fn group_version(reg: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta());
    for rt in reg
        .all()
        .filter(|rt| rt.group == group && rt.versions.iter().any(|v| v == version))
    {
        let name = schema_name(rt, version);
        schemas.insert(name.clone(), kind_schema(rt, version));
        let prefix = format!("/{}", gv_path(group, version));
        let (collection, item) = if rt.namespaced {
            (
                format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural),
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", rt.plural),
            )
        } else {
            (
                format!("{prefix}/{}", rt.plural),
                format!("{prefix}/{}/{{name}}", rt.plural),
            )
        };
        let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        paths.insert(collection, json!({
            "get": operation(rt, "list", &gvk, &reference, &[]),
            "post": operation(rt, "post", &gvk, &reference, &["application/json", "application/yaml"]),
        }));
        paths.insert(item.clone(), item_operations(rt, &gvk, &reference));
        if rt.status_subresource {
            paths.insert(
                format!("{item}/status"),
                item_operations(rt, &gvk, &reference),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn item_operations(rt: &ResourceType, gvk: &Value, reference: &Value) -> Value {
    // Built-in kinds do not advertise strategic merge here, so kubectl computes their
    // patches from its compiled-in types (exact patch metadata) rather than from our
    // abbreviated schemas.
    let patch_types: &[&str] = &[
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    json!({
        "get": operation(rt, "get", gvk, reference, &[]),
        "put": operation(rt, "put", gvk, reference, &["application/json", "application/yaml"]),
        "patch": operation(rt, "patch", gvk, reference, patch_types),
        "delete": operation(rt, "delete", gvk, reference, &[]),
    })
}

fn operation(
    rt: &ResourceType,
    action: &str,
    gvk: &Value,
    reference: &Value,
    body_types: &[&str],
) -> Value {
    let mut params = vec![json!({"name": "pretty", "in": "query", "schema": {"type": "string"}})];
    if !body_types.is_empty() {
        for p in ["dryRun", "fieldManager", "fieldValidation"] {
            params.push(json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
        }
        if action == "patch" {
            params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
        }
    }
    let mut op = json!({
        "operationId": format!("{action}{}", rt.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if !body_types.is_empty() {
        let content: Map<String, Value> = body_types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": reference})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// The real server's schema names: the reversed group, then version and kind.
fn schema_name(rt: &ResourceType, version: &str) -> String {
    let prefix = match rt.group.as_str() {
        "" => "io.k8s.api.core".to_string(),
        "apiextensions.k8s.io" => {
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".to_string()
        }
        g if g.ends_with(".k8s.io") && !rt.custom => {
            format!("io.k8s.api.{}", g.trim_end_matches(".k8s.io"))
        }
        g => g.split('.').rev().collect::<Vec<_>>().join("."),
    };
    format!("{prefix}.{version}.{}", rt.kind)
}

fn kind_schema(rt: &ResourceType, version: &str) -> Value {
    let mut schema = rt
        .schemas
        .get(version)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": rt.group, "version": version, "kind": rt.kind}]);
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "metadata".into(),
            json!({"description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "default": {}}),
        );
    }
    schema
}

fn object_meta() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    let map = |d: &str| json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": d});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": s("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": s("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "labels": map("Map of string keys and values that can be used to organize and categorize objects."),
            "annotations": map("Annotations is an unstructured key value map stored with a resource."),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge"},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"], "x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge"},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "x-kubernetes-list-type": "atomic"},
        },
    })
}
