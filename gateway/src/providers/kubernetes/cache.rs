//! One watch's objects, decoded one at a time: what a kube-rs reflector store holds, plus
//! the objects that could not be decoded (each with its own error) and whether the watch
//! has listed once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One object as last seen.
#[derive(Debug)]
pub struct Entry<T> {
    /// The typed object, or why it could not be decoded.
    pub object: Result<Arc<T>, String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`: which version of the object `status` is from.
    pub resource_version: Option<String>,
    /// `status` as the API server holds it (to skip writes that change nothing).
    pub status: Value,
    /// `spec.parentRefs` as written (for the status of routes that cannot be decoded).
    pub parent_refs: Value,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            object: self.object.clone(),
            generation: self.generation,
            resource_version: self.resource_version.clone(),
            status: self.status.clone(),
            parent_refs: self.parent_refs.clone(),
        }
    }
}

#[derive(Debug)]
struct State<T> {
    objects: BTreeMap<String, Entry<T>>,
    /// Objects of a relist in progress; swapped in whole when it is done, so a broken
    /// watch never empties the cache.
    relist: Option<BTreeMap<String, Entry<T>>>,
    synced: bool,
    /// Discovery says the API server does not serve this kind (a CRD not installed).
    missing: bool,
    /// The version discovery found served (what status is written to).
    version: Option<String>,
}

/// The objects of one watch, keyed `namespace/name` (`name` for cluster-scoped kinds).
#[derive(Debug)]
pub struct Cache<T> {
    state: Mutex<State<T>>,
    /// Drops what the gateway does not read (a Pod's containers) to keep memory small.
    trim: fn(T) -> T,
}

impl<T> Cache<T> {
    /// An empty cache that keeps objects as decoded.
    pub fn new() -> Self {
        Self::with_trim(|t| t)
    }

    /// An empty cache that trims each decoded object with `trim`.
    pub fn with_trim(trim: fn(T) -> T) -> Self {
        Cache {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                relist: None,
                synced: false,
                missing: false,
                version: None,
            }),
            trim,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the watch has completed its first list, or its kind is not installed (an
    /// absent CRD never holds readiness back).
    pub fn synced(&self) -> bool {
        let st = self.lock();
        st.synced || st.missing
    }

    /// Records whether discovery found the kind installed.
    pub fn set_missing(&self, missing: bool) {
        self.lock().missing = missing;
    }

    /// Records the version the watch uses (the first of the kind's versions served).
    pub fn set_version(&self, version: &str) {
        self.lock().version = Some(version.to_string());
    }

    /// The version the watch uses, once discovered.
    pub fn version(&self) -> Option<String> {
        self.lock().version.clone()
    }

    /// Every entry, by key.
    pub fn entries(&self) -> BTreeMap<String, Entry<T>> {
        self.lock().objects.clone()
    }

    /// One entry.
    pub fn get(&self, key: &str) -> Option<Entry<T>> {
        self.lock().objects.get(key).cloned()
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.lock().objects.len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned> Cache<T> {
    /// Applies one watcher event; returns whether the objects served changed.
    pub fn apply(&self, event: Event<DynamicObject>) -> bool {
        let mut st = self.lock();
        match event {
            Event::Init => {
                st.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let (key, entry) = self.decode(obj);
                st.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, entry);
                false
            }
            Event::InitDone => {
                if let Some(objects) = st.relist.take() {
                    st.objects = objects;
                }
                st.synced = true;
                true
            }
            Event::Apply(obj) => {
                let (key, entry) = self.decode(obj);
                st.objects.insert(key, entry);
                true
            }
            Event::Delete(obj) => {
                let key = key_of(&obj);
                st.objects.remove(&key).is_some()
            }
        }
    }

    fn decode(&self, obj: DynamicObject) -> (String, Entry<T>) {
        let key = key_of(&obj);
        let generation = obj.metadata.generation;
        let resource_version = obj.metadata.resource_version.clone();
        // Only Gateway API objects get status written; a Pod's status is large and unused.
        let ours = obj
            .types
            .as_ref()
            .is_some_and(|t| t.api_version.starts_with("gateway.networking.k8s.io/"));
        let status = match obj.data.get("status") {
            Some(s) if ours => s.clone(),
            _ => Value::Null,
        };
        let parent_refs = obj
            .data
            .get("spec")
            .and_then(|s| s.get("parentRefs"))
            .cloned()
            .unwrap_or(Value::Null);
        let object = serde_json::to_value(&obj)
            .and_then(serde_json::from_value::<T>)
            .map(|t| Arc::new((self.trim)(t)))
            .map_err(|e| e.to_string());
        let entry = Entry {
            object,
            generation,
            resource_version,
            status,
            parent_refs,
        };
        (key, entry)
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object.
pub fn key_of(obj: &DynamicObject) -> String {
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    match obj.metadata.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Service;

    fn service(name: &str, port: Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"port": port}]}
        }))
        .unwrap()
    }

    #[test]
    fn an_undecodable_object_is_kept_with_its_error_beside_the_good_ones() {
        let cache: Cache<Service> = Cache::new();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(service("good", 80.into())));
        cache.apply(Event::InitApply(service("bad", "eighty".into())));
        assert!(cache.apply(Event::InitDone));
        let entries = cache.entries();
        assert!(entries["default/good"].object.is_ok());
        let err = entries["default/bad"].object.as_ref().unwrap_err();
        assert!(err.contains("invalid type: string \"eighty\""), "{err}");
    }

    #[test]
    fn a_relist_replaces_the_objects_only_when_it_completes() {
        let cache: Cache<Service> = Cache::new();
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(service("a", 80.into())));
        cache.apply(Event::InitDone);
        // A watch broke and relists: until InitDone the old objects keep serving.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(service("b", 80.into())));
        assert_eq!(cache.entries().keys().collect::<Vec<_>>(), ["default/a"]);
        cache.apply(Event::InitDone);
        assert_eq!(cache.entries().keys().collect::<Vec<_>>(), ["default/b"]);
    }
}
