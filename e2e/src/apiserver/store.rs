//! Objects, the global resourceVersion counter, and watch fan-out with a bounded history
//! (a watch from before the history's start gets 410 Expired, as with etcd compaction).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::apply::Writer;
use super::resources::{Registry, ResourceType};
use super::status::{ApiError, success};

/// How many events the watch history keeps before older resourceVersions expire.
const HISTORY: usize = 10_000;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// An object appeared.
    Added,
    /// An object changed.
    Modified,
    /// An object went away.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Resource type key (`plural.group`).
    pub key: String,
    /// What happened.
    pub event: EventType,
    /// The object after the change (for DELETED: as it was, with the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change.
    pub previous: Option<Value>,
}

/// What the watchers hear.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A change was committed.
    Change(Arc<Change>),
    /// Every open watch must end now (a test control, or a new epoch).
    DropWatches,
}

/// Who writes, and how.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager` (or the User-Agent's product name).
    pub manager: String,
    /// `force` for server-side apply.
    pub force: bool,
    /// `dryRun=All`: compute the result but do not store it.
    pub dry_run: bool,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
}

/// A watch's starting point: events to replay, then live signals.
pub struct WatchStart {
    /// Every object of the type at the snapshot (when asked for initial state).
    pub initial: Vec<Value>,
    /// Events after the requested resourceVersion, oldest first.
    pub replay: Vec<Arc<Change>>,
    /// Live signals from the moment of the snapshot.
    pub live: broadcast::Receiver<Signal>,
    /// The resourceVersion of the snapshot.
    pub rv: u64,
}

/// A page of a list.
pub struct Page {
    /// The objects, in key order.
    pub items: Vec<Value>,
    /// The list's resourceVersion.
    pub rv: u64,
    /// The next page's continue token (`ns/name` to start after, with the list's rv).
    pub next: Option<(String, usize)>,
}

struct State {
    rv: u64,
    /// Watches from a resourceVersion below this get 410.
    oldest_rv: u64,
    registry: Arc<Registry>,
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
}

/// The object store behind the fixture.
pub struct Store {
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// A store with the built-in kinds and the namespaces every cluster has.
    pub fn new() -> Self {
        let (signals, _) = broadcast::channel(4096);
        let store = Store {
            state: Mutex::new(State {
                rv: 1,
                oldest_rv: 1,
                registry: Arc::new(Registry::builtin()),
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            signals,
        };
        let ns = store
            .registry()
            .find("", "v1", "namespaces")
            .expect("namespaces are built in");
        let opts = WriteOptions {
            manager: "kube-apiserver".into(),
            ..Default::default()
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            store
                .create(&ns, "v1", "", obj, &opts)
                .expect("fresh store");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource types served now.
    pub fn registry(&self) -> Arc<Registry> {
        self.lock().registry.clone()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Reads one object.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        st.objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.into(), name.into())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.key(), name))
    }

    /// Lists objects of `rt` in `ns` (all namespaces if empty) matching `filter`, from the
    /// key after `start` (`ns/name`, as [`Page::next`] gives it), at most `limit`. A page
    /// starts where the last one ended (a range of the map, not a scan from the first
    /// object), so listing n objects in pages costs O(n) plus the remaining counts.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: &str,
        filter: impl Fn(&Value) -> bool,
        start: Option<&str>,
        limit: usize,
    ) -> Page {
        let st = self.lock();
        let mut items = Vec::new();
        let mut next = None;
        if let Some(objects) = st.objects.get(&rt.key()) {
            let lower = match start {
                Some(s) => {
                    let (n, m) = s.split_once('/').unwrap_or(("", s));
                    Bound::Excluded((n.to_string(), m.to_string()))
                }
                None if !ns.is_empty() => Bound::Included((ns.to_string(), String::new())),
                None => Bound::Unbounded,
            };
            let mut rest = objects
                .range((lower, Bound::Unbounded))
                .take_while(|((ons, _), _)| ns.is_empty() || ons.as_str() <= ns)
                .filter(|((ons, _), obj)| (ns.is_empty() || ons == ns) && filter(obj));
            while let Some((_, obj)) = rest.next() {
                if items.len() == limit {
                    // This object and every matching one after it.
                    next = Some((items_last_key(&items), 1 + rest.count()));
                    break;
                }
                items.push(obj.clone());
            }
        }
        Page {
            items,
            rv: st.rv,
            next,
        }
    }

    /// Starts a watch from `from` (0: now, with the current objects as initial state when
    /// `initial`); Err(Expired) if `from` is before the history.
    pub fn watch(
        &self,
        rt: &ResourceType,
        from: u64,
        initial: bool,
    ) -> Result<WatchStart, ApiError> {
        let st = self.lock();
        if from != 0 && from < st.oldest_rv {
            return Err(ApiError::Expired(format!(
                "too old resource version: {from} ({})",
                st.oldest_rv
            )));
        }
        let key = rt.key();
        let replay = if from == 0 {
            Vec::new()
        } else {
            st.history
                .iter()
                .filter(|c| c.rv > from && c.key == key)
                .cloned()
                .collect()
        };
        let initial = if initial {
            st.objects
                .get(&key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(WatchStart {
            initial,
            replay,
            live: self.signals.subscribe(),
            rv: st.rv,
        })
    }

    /// Creates an object.
    pub fn create(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        self.create_inner(rt, version, ns, obj, opts, true)
    }

    fn create_inner(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
        record: bool,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        check_kind(rt, version, &obj)?;
        let name = assign_name(&mut obj)?;
        if rt.namespaced
            && !st
                .objects
                .get("namespaces")
                .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
        {
            return Err(ApiError::not_found("namespaces", ns));
        }
        if st
            .objects
            .get(&rt.key())
            .is_some_and(|m| m.contains_key(&(ns.into(), name.clone())))
        {
            return Err(ApiError::AlreadyExists {
                resource: rt.key(),
                name,
            });
        }
        let now = now();
        let meta = &mut obj["metadata"];
        if rt.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(uuid());
        meta["creationTimestamp"] = json!(now);
        if rt.generation {
            meta["generation"] = json!(1);
        }
        let m = meta.as_object_mut().expect("metadata is an object");
        for k in ["resourceVersion", "deletionTimestamp"] {
            m.remove(k);
        }
        reset_status_on_create(rt, &mut obj);
        if record {
            obj["metadata"]
                .as_object_mut()
                .map(|m| m.remove("managedFields"));
            let writer = Writer {
                rt,
                version,
                manager: &opts.manager,
                subresource: "",
                now: &now,
            };
            writer.record_update(None, &mut obj);
        }
        if opts.dry_run {
            return Ok(obj);
        }
        Ok(commit(&mut st, &self.signals, rt, ns, &name, None, obj))
    }

    /// Replaces or patches an existing object: `change` maps the current object to the
    /// requested one (None when it does not exist, for apply's create).
    pub fn write(
        &self,
        rt: &ResourceType,
        version: &str,
        ns: &str,
        name: &str,
        opts: &WriteOptions,
        change: impl FnOnce(Option<&Value>, &Writer<'_>) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let current = st
            .objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.into(), name.into())))
            .cloned();
        let now = now();
        let writer = Writer {
            rt,
            version,
            manager: &opts.manager,
            subresource: &opts.subresource,
            now: &now,
        };
        let requested = change(current.as_ref(), &writer)?;
        let Some(live) = current else {
            // Only server-side apply creates through a patch; its managedFields are set.
            drop(st);
            return self.create_inner(rt, version, ns, requested, opts, false);
        };
        check_kind(rt, version, &requested)?;
        let precondition = requested
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if precondition.is_some_and(|rv| Some(rv) != live["metadata"]["resourceVersion"].as_str()) {
            return Err(ApiError::stale(&rt.key(), name));
        }
        let new = next_version(rt, &opts.subresource, &live, requested, &now)?;
        if same_content(&live, &new) {
            return Ok(live);
        }
        if opts.dry_run {
            return Ok(new);
        }
        Ok(commit(
            &mut st,
            &self.signals,
            rt,
            ns,
            name,
            Some(live),
            new,
        ))
    }

    /// Deletes an object (or marks it for deletion while finalizers remain); returns what the
    /// real server returns: the object for built-in kinds, a Success Status for custom ones.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        precondition_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let live = st
            .objects
            .get(&rt.key())
            .and_then(|m| m.get(&(ns.into(), name.into())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.key(), name))?;
        if precondition_uid.is_some_and(|u| Some(u) != live["metadata"]["uid"].as_str()) {
            return Err(ApiError::Conflict {
                message: format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    precondition_uid.unwrap_or_default(),
                    live["metadata"]["uid"]
                ),
                details: None,
            });
        }
        let has_finalizers = live
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let out = if has_finalizers {
            let mut new = live.clone();
            if new["metadata"].get("deletionTimestamp").is_none() {
                new["metadata"]["deletionTimestamp"] = json!(now());
                new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            commit(&mut st, &self.signals, rt, ns, name, Some(live), new)
        } else {
            remove(&mut st, &self.signals, rt, ns, name)
        };
        Ok(if rt.custom {
            success(name, &rt.group, &rt.plural, &out["metadata"]["uid"])
        } else {
            out
        })
    }

    /// Ends every open watch.
    pub fn drop_watches(&self) {
        let _ = self.signals.send(Signal::DropWatches);
    }

    /// Forgets the watch history: watches from any earlier resourceVersion get 410.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.history.clear();
        st.oldest_rv = st.rv + 1;
    }

    /// Simulates a restore into a new etcd: every object gets a new resourceVersion in a new
    /// range, the history is gone, and every watch ends; clients must relist.
    pub fn restart_epoch(&self) {
        let mut st = self.lock();
        let mut rv = (st.rv / 1_000_000 + 1) * 1_000_000;
        st.oldest_rv = rv;
        for objects in st.objects.values_mut() {
            for obj in objects.values_mut() {
                rv += 1;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            }
        }
        st.rv = rv;
        st.history.clear();
        drop(st);
        self.drop_watches();
    }
}

fn items_last_key(items: &[Value]) -> String {
    items
        .last()
        .map(|o| {
            format!(
                "{}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

/// Stores `new` with the next resourceVersion, handles CRDs, and tells the watchers.
fn commit(
    st: &mut State,
    signals: &broadcast::Sender<Signal>,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    old: Option<Value>,
    mut new: Value,
) -> Value {
    let finalized = new["metadata"].get("deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
    if finalized && old.is_some() {
        st.objects
            .get_mut(&rt.key())
            .map(|m| m.insert((ns.into(), name.into()), new.clone()));
        return remove(st, signals, rt, ns, name);
    }
    st.rv += 1;
    new["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    if rt.kind == "CustomResourceDefinition" {
        accept_crd(st, &mut new);
    }
    st.objects
        .entry(rt.key())
        .or_default()
        .insert((ns.into(), name.into()), new.clone());
    let event = if old.is_some() {
        EventType::Modified
    } else {
        EventType::Added
    };
    publish(
        st,
        signals,
        Change {
            rv: st.rv,
            key: rt.key(),
            event,
            object: new.clone(),
            previous: old,
        },
    );
    new
}

/// Removes an object (for a CRD: its kind and every object of it, too).
fn remove(
    st: &mut State,
    signals: &broadcast::Sender<Signal>,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Value {
    let mut obj = st
        .objects
        .get_mut(&rt.key())
        .and_then(|m| m.remove(&(ns.into(), name.into())))
        .unwrap_or(Value::Null);
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    publish(
        st,
        signals,
        Change {
            rv: st.rv,
            key: rt.key(),
            event: EventType::Deleted,
            object: obj.clone(),
            previous: None,
        },
    );
    if rt.kind == "CustomResourceDefinition" {
        let served = st
            .registry
            .all()
            .find(|t| t.custom && format!("{}.{}", t.plural, t.group) == name)
            .cloned();
        if let Some(served) = served {
            let doomed: Vec<(String, String)> = st
                .objects
                .get(&served.key())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (ons, oname) in doomed {
                remove(st, signals, &served, &ons, &oname);
            }
            let mut reg = (*st.registry).clone();
            reg.remove(&served.key());
            st.registry = Arc::new(reg);
        }
    }
    if rt.kind == "Namespace" {
        for (key, objects) in st.objects.clone() {
            let Some(t) = st.registry.all().find(|t| t.key() == key).cloned() else {
                continue;
            };
            for (ons, oname) in objects.keys().filter(|(o, _)| o == name) {
                remove(st, signals, &t, ons, oname);
            }
        }
    }
    obj
}

fn publish(st: &mut State, signals: &broadcast::Sender<Signal>, change: Change) {
    let change = Arc::new(change);
    st.history.push_back(change.clone());
    while st.history.len() > HISTORY {
        if let Some(old) = st.history.pop_front() {
            st.oldest_rv = old.rv;
        }
    }
    let _ = signals.send(Signal::Change(change));
}

/// Serves a CRD's kinds and marks it Established, as the apiextensions controller does.
fn accept_crd(st: &mut State, crd: &mut Value) {
    let mut reg = (*st.registry).clone();
    if reg.install_crd(crd).is_none() {
        return;
    }
    st.registry = Arc::new(reg);
    let now = now();
    let condition = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    crd["status"] = json!({
        "acceptedNames": crd["spec"]["names"].clone(),
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": crd["spec"]["versions"].as_array().into_iter().flatten()
            .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
    });
}

/// The object a write leaves: identity and server-owned metadata kept, spec or status taken
/// from the request depending on the subresource, generation bumped on spec changes.
fn next_version(
    rt: &ResourceType,
    subresource: &str,
    live: &Value,
    requested: Value,
    _now: &str,
) -> Result<Value, ApiError> {
    let mut new = if subresource == "status" {
        let mut n = live.clone();
        match requested.get("status") {
            Some(s) => n["status"] = s.clone(),
            None => {
                n.as_object_mut().map(|m| m.remove("status"));
            }
        }
        n["metadata"]["managedFields"] = requested["metadata"]["managedFields"].clone();
        n
    } else {
        let mut n = requested;
        if rt.status_subresource {
            match live.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        n
    };
    let meta = new["metadata"]
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?;
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match live["metadata"].get(k) {
            Some(v) => meta.insert(k.into(), v.clone()),
            None => meta.remove(k),
        };
    }
    meta.remove("resourceVersion");
    if meta.get("managedFields").is_some_and(Value::is_null) {
        meta.remove("managedFields");
    }
    if rt.generation && spec_of(rt, live) != spec_of(rt, &new) {
        let g = live["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    Ok(new)
}

/// Everything that counts as spec for metadata.generation: all but metadata (and status
/// when it has its own subresource).
fn spec_of(rt: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if rt.status_subresource {
            m.remove("status");
        }
        m.remove("apiVersion");
    }
    o
}

/// Whether a write changes nothing (then no resourceVersion bump and no event, as the real
/// server does); managedFields timestamps do not count.
fn same_content(live: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf {
                    e.as_object_mut().map(|e| e.remove("time"));
                }
            }
        }
        v.as_object_mut().map(|m| m.remove("apiVersion"));
        v
    };
    strip(live) == strip(new)
}

fn check_kind(rt: &ResourceType, version: &str, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or(&rt.kind);
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| rt.api_version(version));
    if kind != rt.kind || !rt.versions.iter().any(|v| rt.api_version(v) == api_version) {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version(version)
        )));
    }
    Ok(())
}

/// The object's name (generating one from generateName), checked as a DNS subdomain.
fn assign_name(obj: &mut Value) -> Result<String, ApiError> {
    let meta = obj
        .as_object_mut()
        .expect("checked")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let name = match (
        meta.get("name").and_then(Value::as_str),
        meta.get("generateName").and_then(Value::as_str),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => {
            let suffix: String = (0..5)
                .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
                .collect();
            format!("{prefix}{suffix}")
        }
        _ => {
            return Err(ApiError::Invalid {
                message: "metadata.name: Required value: name or generateName is required".into(),
                details: None,
            });
        }
    };
    let valid = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(ApiError::Invalid {
            message: format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
            details: None,
        });
    }
    meta["name"] = json!(name);
    Ok(name)
}

/// Status the client may not set at create, as the real registries reset it.
fn reset_status_on_create(rt: &ResourceType, obj: &mut Value) {
    if !rt.status_subresource {
        return;
    }
    match rt.kind.as_str() {
        "Service" => obj["status"] = json!({"loadBalancer": {}}),
        "Pod" => {
            if obj.get("status").is_none() {
                obj["status"] = json!({"phase": "Pending"});
            }
        }
        "Namespace" => obj["status"] = json!({"phase": "Active"}),
        "CustomResourceDefinition" => {}
        _ => {
            obj.as_object_mut().map(|m| m.remove("status"));
        }
    }
}

/// The current time as the API server writes it (RFC 3339, seconds, UTC).
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A random version-4 UUID.
fn uuid() -> String {
    let mut b: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
