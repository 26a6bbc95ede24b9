//! Object identity (`namespace/name`) and the catch-all for fields we do not implement.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Where an object lives: its namespace (`default` when absent) and `namespace/name` key.
pub trait ObjectKey {
    /// The namespace, defaulting to `default`.
    fn ns(&self) -> &str;
    /// The name, empty when absent.
    fn name(&self) -> &str;
    /// `namespace/name`.
    fn key(&self) -> String {
        // Sized up front: `format!` would grow the string twice, and translation asks
        // for keys several times per route.
        let (ns, name) = (self.ns(), self.name());
        let mut key = String::with_capacity(ns.len() + 1 + name.len());
        key.push_str(ns);
        key.push('/');
        key.push_str(name);
        key
    }
}

impl ObjectKey for ObjectMeta {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Fields present in an object that this gateway does not implement, by their API
/// spelling. Every struct of the Gateway API types flattens one of these, so `translate`
/// can report an unimplemented field by name instead of silently dropping it.
pub type Unsupported = BTreeMap<String, serde_json::Value>;
