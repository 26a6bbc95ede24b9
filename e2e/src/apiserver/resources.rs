//! The resource types served: the built-in kinds and one per served CRD, with what
//! discovery, OpenAPI and the patch engines need to know about each.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// How a list field merges: as one value, as a set of scalars, or as a map keyed by fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole (and owned whole by server-side apply).
    Atomic,
    /// Scalars merged as a set.
    Set,
    /// Objects matched by these key fields (the first is the strategic-merge patch key).
    Map(Vec<String>),
}

/// One resource (`plural.group`) and how it is served.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: String,
    /// Served versions, most preferred first.
    pub versions: Vec<String>,
    /// Kind of one object.
    pub kind: String,
    /// Lower-case plural used in paths.
    pub plural: String,
    /// Lower-case singular name.
    pub singular: String,
    /// kubectl short names (`svc`, `gtw`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether a `/status` subresource splits status writes from spec writes.
    pub status_subresource: bool,
    /// Served from a CustomResourceDefinition (JSON objects, no strategic merge patch).
    pub custom: bool,
    /// Whether `metadata.generation` is maintained.
    pub generation: bool,
    /// OpenAPI v3 schema of one object, per version.
    pub schemas: BTreeMap<String, Value>,
    /// List types of the built-in kinds, by dotted field path (`spec.ports`).
    pub builtin_lists: &'static [(&'static str, &'static [&'static str])],
    /// CRD additionalPrinterColumns, per version.
    pub printer_columns: BTreeMap<String, Vec<Value>>,
}

impl ResourceType {
    /// The store key: `plural.group` (or `plural` for core).
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `group/version`, or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The list type of the field at `path` (field names only).
    pub fn list_type(&self, version: &str, path: &[String]) -> ListType {
        if self.custom {
            return self
                .schemas
                .get(version)
                .and_then(|s| schema_at(s, path))
                .map(list_type_of_schema)
                .unwrap_or(ListType::Atomic);
        }
        let dotted = path.join(".");
        for (p, keys) in COMMON_LISTS.iter().chain(self.builtin_lists) {
            if *p == dotted {
                return match keys {
                    [] => ListType::Set,
                    keys => ListType::Map(keys.iter().map(|k| k.to_string()).collect()),
                };
            }
        }
        ListType::Atomic
    }
}

/// The sub-schema at `path`, following properties, items and additionalProperties.
pub fn schema_at<'a>(schema: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = schema;
    for field in path {
        while cur.get("type").and_then(Value::as_str) == Some("array") {
            cur = cur.get("items")?;
        }
        cur = match cur.get("properties").and_then(|p| p.get(field)) {
            Some(s) => s,
            None => cur.get("additionalProperties").filter(|a| a.is_object())?,
        };
    }
    Some(cur)
}

fn list_type_of_schema(schema: &Value) -> ListType {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

/// Lists every kind shares (metadata), with their merge keys; an empty key list is a set.
const COMMON_LISTS: &[(&str, &[&str])] = &[
    ("metadata.ownerReferences", &["uid"]),
    ("metadata.finalizers", &[]),
];

const POD_LISTS: &[(&str, &[&str])] = &[
    ("spec.containers", &["name"]),
    ("spec.initContainers", &["name"]),
    ("spec.ephemeralContainers", &["name"]),
    ("spec.containers.ports", &["containerPort", "protocol"]),
    ("spec.initContainers.ports", &["containerPort", "protocol"]),
    ("spec.containers.env", &["name"]),
    ("spec.initContainers.env", &["name"]),
    ("spec.containers.volumeMounts", &["mountPath"]),
    ("spec.initContainers.volumeMounts", &["mountPath"]),
    ("spec.volumes", &["name"]),
    ("spec.imagePullSecrets", &["name"]),
    ("status.conditions", &["type"]),
    ("status.podIPs", &["ip"]),
];

const SERVICE_LISTS: &[(&str, &[&str])] = &[
    ("spec.ports", &["port", "protocol"]),
    ("status.conditions", &["type"]),
];

const CONDITION_LISTS: &[(&str, &[&str])] = &[("status.conditions", &["type"])];

/// A built-in kind's static description.
struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    status: bool,
    lists: &'static [(&'static str, &'static [&'static str])],
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        short_names: &["ns"],
        namespaced: false,
        status: true,
        lists: CONDITION_LISTS,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        short_names: &["svc"],
        namespaced: true,
        status: true,
        lists: SERVICE_LISTS,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        short_names: &["po"],
        namespaced: true,
        status: true,
        lists: POD_LISTS,
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        short_names: &[],
        namespaced: true,
        status: false,
        lists: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        short_names: &["cm"],
        namespaced: true,
        status: false,
        lists: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        status: false,
        lists: &[],
    },
    Builtin {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        short_names: &[],
        namespaced: true,
        status: false,
        lists: &[],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        short_names: &[],
        namespaced: true,
        status: false,
        lists: &[],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        short_names: &["crd", "crds"],
        namespaced: false,
        status: true,
        lists: CONDITION_LISTS,
    },
];

/// Every served resource type.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: BTreeMap<String, Arc<ResourceType>>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut reg = Registry::default();
        for b in BUILTINS {
            let rt = ResourceType {
                group: b.group.into(),
                versions: vec![b.version.into()],
                kind: b.kind.into(),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: if matches!(b.kind, "Pod" | "Service") {
                    vec!["all".into()]
                } else {
                    vec![]
                },
                namespaced: b.namespaced,
                status_subresource: b.status,
                custom: false,
                generation: b.kind == "CustomResourceDefinition",
                schemas: BTreeMap::from([(b.version.to_string(), builtin_schema(b))]),
                builtin_lists: b.lists,
                printer_columns: BTreeMap::new(),
            };
            reg.types.insert(rt.key(), Arc::new(rt));
        }
        reg
    }

    /// All types, by key.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// The type served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let key = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        self.types
            .get(&key)
            .filter(|rt| rt.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The type of `kind` in `apiVersion`.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.types
            .values()
            .find(|rt| {
                rt.group == group && rt.kind == kind && rt.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    /// Serves (or re-serves) the kinds a CRD defines; returns the type's key.
    pub fn install_crd(&mut self, crd: &Value) -> Option<String> {
        let rt = crd_resource_type(crd)?;
        let key = rt.key();
        self.types.insert(key.clone(), Arc::new(rt));
        Some(key)
    }

    /// Stops serving a CRD's kinds.
    pub fn remove(&mut self, key: &str) {
        self.types.remove(key);
    }

    /// Groups with their versions, most preferred first, in a stable order (core first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rt in self.types.values() {
            let versions = groups.entry(rt.group.clone()).or_default();
            for v in &rt.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        groups
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                (g, vs)
            })
            .collect()
    }
}

/// Kubernetes' version ordering: GA over beta over alpha, higher numbers first.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (level, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (level, major, minor)
}

fn crd_resource_type(crd: &Value) -> Option<ResourceType> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kind = names.get("kind")?.as_str()?.to_string();
    let mut versions = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut printer_columns = BTreeMap::new();
    let mut status_subresource = false;
    for v in spec.get("versions")?.as_array()? {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = v.get("name")?.as_str()?.to_string();
        status_subresource |= v.pointer("/subresources/status").is_some();
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        schemas.insert(name.clone(), schema);
        if let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array) {
            printer_columns.insert(name.clone(), cols.clone());
        }
        versions.push(name);
    }
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    Some(ResourceType {
        group: spec.get("group")?.as_str()?.to_string(),
        versions,
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind,
        plural: names.get("plural")?.as_str()?.to_string(),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        status_subresource,
        custom: true,
        generation: true,
        schemas,
        builtin_lists: &[],
        printer_columns,
    })
}

/// A schema for a built-in kind: its metadata and list merge keys, the rest left open, which
/// is all `kubectl explain` and field validation need from us.
fn builtin_schema(b: &Builtin) -> Value {
    let mut schema = json!({
        "type": "object",
        "description": format!("{} is the built-in Kubernetes kind of that name.", b.kind),
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": "Standard object's metadata."},
        },
    });
    for field in [
        "spec",
        "status",
        "data",
        "stringData",
        "type",
        "endpoints",
        "ports",
        "addressType",
        "subsets",
        "immutable",
        "binaryData",
    ] {
        schema["properties"][field] = json!({"x-kubernetes-preserve-unknown-fields": true});
    }
    for (path, keys) in b.lists {
        let mut cur = &mut schema;
        for part in path.split('.') {
            cur = &mut cur["properties"][part];
            if cur.get("type").and_then(Value::as_str) == Some("array") {
                cur = &mut cur["items"];
            }
        }
        let mut list = json!({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys});
        if let Some(first) = keys.first() {
            list["x-kubernetes-patch-merge-key"] = json!(first);
            list["x-kubernetes-patch-strategy"] = json!("merge");
        }
        *cur = list;
    }
    schema
}
