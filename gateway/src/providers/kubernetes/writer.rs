//! Writes status while this replica holds the status Lease: our GatewayClasses' and the
//! Gateway's by server-side apply (field manager `meshgate`), each route's `status.parents` (an
//! atomic list other controllers write too) by read-modify-write of `/status` with the
//! resourceVersion read, keeping other entries and retrying on 409.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::lease::LeaseLock;
use super::status::{self, same_ignoring_timestamps};
use super::{FIELD_MANAGER, Settings, StatusFeed};
use crate::admin::BindState;
use crate::dataplane::TableReader;

/// Read-modify-write attempts per route before giving up until the next change.
const CONFLICT_RETRIES: usize = 5;

/// The handles the status writer reads.
pub struct StatusWriter {
    /// API client.
    pub client: Client,
    /// Provider settings (Gateway, identity, lease duration, addresses).
    pub settings: Settings,
    /// What status should say, after each translation.
    pub feed: StatusFeed,
    /// The served tables (is a listener's port served yet).
    pub tables: TableReader,
    /// Bind results per port.
    pub binds: BindState,
    /// Bumped after each table swap.
    pub applied: watch::Receiver<u64>,
    /// Becomes true on SIGTERM: the holder gives the Lease up and the writer ends.
    pub stop: watch::Receiver<bool>,
}

impl StatusWriter {
    /// Holds (or waits for) the Lease and writes status on every change, until stopped;
    /// a holder releases the Lease on the way out so another replica takes over at once.
    pub async fn run(mut self) {
        let gw = self.settings.gateway.clone();
        let lease_name = format!("meshgate-{}", gw.name);
        let duration = self.settings.lease_duration;
        let mut lock = LeaseLock::new(
            self.client.clone(),
            &gw.namespace,
            &lease_name,
            &self.settings.identity,
            duration,
        );
        let mut held_until: Option<Instant> = None;
        let mut next_renew = tokio::time::Instant::now();
        let mut dirty = true;
        let mut written = Written::default();
        loop {
            if tokio::time::Instant::now() >= next_renew {
                held_until = self.renew(&mut lock, held_until, duration).await;
                next_renew = tokio::time::Instant::now() + duration / 3;
                // A new holder rewrites everything once: the old one may have died mid-way.
                dirty |= held_until.is_some();
            }
            let leader = held_until.is_some_and(|t| Instant::now() < t);
            if leader && dirty {
                dirty = !self.write_all(&mut written).await;
            }
            tokio::select! {
                r = self.feed.changed() => { if r.is_err() { return } dirty = true; }
                r = self.applied.changed() => { if r.is_err() { return } dirty = true; }
                _ = tokio::time::sleep_until(next_renew) => {}
                r = self.stop.changed() => {
                    let stopping = r.is_err() || *self.stop.borrow();
                    if !stopping {
                        continue;
                    }
                    if held_until.is_some() {
                        lock.release().await;
                        tracing::info!("shutting down: status Lease released");
                    }
                    return;
                }
            }
        }
    }

    /// Tries the Lease; returns until when this replica may act as holder.
    async fn renew(
        &self,
        lock: &mut LeaseLock,
        held_until: Option<Instant>,
        duration: Duration,
    ) -> Option<Instant> {
        let was = held_until.is_some_and(|t| Instant::now() < t);
        match lock.try_hold().await {
            Ok(true) => {
                if !was {
                    tracing::info!(identity = %self.settings.identity, "holding the status Lease; writing status");
                }
                Some(Instant::now() + duration)
            }
            Ok(false) => {
                if was {
                    tracing::info!("status Lease lost; no longer writing status");
                }
                None
            }
            Err(e) => {
                // Keep acting until our own Lease would expire, never longer.
                tracing::warn!(error = %e, "cannot renew the status Lease");
                held_until
            }
        }
    }

    /// Writes every status that differs from what is wanted; returns whether all writes
    /// succeeded.
    async fn write_all(&self, written: &mut Written) -> bool {
        let Some(desired) = self.feed.borrow().clone() else {
            return true;
        };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut ok = true;
        for c in &desired.gateway_classes {
            ok &= self.write_gateway_class(c, &now, written).await;
        }
        if let Some(g) = &desired.gateway {
            ok &= self.write_gateway(g, &now, written).await;
        }
        for r in &desired.lists {
            ok &= self.write_list(r, &now, written).await;
        }
        // Forget deleted objects: a route recreated under its name starts afresh.
        let keys: std::collections::HashSet<String> = desired
            .gateway_classes
            .iter()
            .map(|c| format!("GatewayClass {}", c.name))
            .chain(desired.gateway.iter().map(|g| format!("Gateway {}", g.key)))
            .chain(
                desired
                    .lists
                    .iter()
                    .map(|r| format!("{} {}", r.list.kind, r.key)),
            )
            .collect();
        written.by_object.retain(|k, _| keys.contains(k));
        ok
    }

    fn programmed(&self, port: u16) -> Result<(), String> {
        if !self.tables.load().ports.contains_key(&port) {
            return Err(format!("port {port} is not served yet"));
        }
        let binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
        match binds.get(&port) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("port {port} is not bound yet")),
        }
    }

    async fn write_gateway(
        &self,
        g: &status::GatewayDesired,
        now: &str,
        written: &mut Written,
    ) -> bool {
        let doc = status::gateway_status(
            g,
            &|p| self.programmed(p),
            &self.settings.status_addresses,
            now,
        );
        let key = format!("Gateway {}", g.key);
        let seen = &g.resource_version;
        if same_ignoring_timestamps(&doc, &g.current) || written.already(&key, &doc, seen) {
            return true;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &g.key.namespace,
            &resource("v1", "Gateway", "gateways"),
        );
        let patch = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": g.key.name, "namespace": g.key.namespace},
            "status": doc,
        });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&g.key.name, &pp, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                written.record(key, doc, seen);
                tracing::info!(gateway = %g.key, "Gateway status written");
                true
            }
            Err(e) => {
                tracing::warn!(gateway = %g.key, error = %e, "cannot write Gateway status");
                false
            }
        }
    }

    async fn write_gateway_class(
        &self,
        c: &status::ClassDesired,
        now: &str,
        written: &mut Written,
    ) -> bool {
        let doc = status::gateway_class_status(c, now);
        let key = format!("GatewayClass {}", c.name);
        let current = &c.current["conditions"];
        if same_ignoring_timestamps(&doc["conditions"], current)
            || written.already(&key, &doc["conditions"], &c.resource_version)
        {
            return true;
        }
        let api: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &resource("v1", "GatewayClass", "gatewayclasses"),
        );
        let patch = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": c.name},
            "status": doc,
        });
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(&c.name, &pp, &Patch::Apply(&patch)).await {
            Ok(_) => {
                written.record(key, doc["conditions"].clone(), &c.resource_version);
                tracing::info!(gateway_class = %c.name, "GatewayClass status written");
                true
            }
            Err(e) => {
                tracing::warn!(gateway_class = %c.name, error = %e, "cannot write GatewayClass status");
                false
            }
        }
    }

    async fn write_list(&self, r: &status::ListDesired, now: &str, written: &mut Written) -> bool {
        let gw = &self.settings.gateway;
        let list = r.list;
        let current_parents = |status: &Value| match &status[list.list] {
            Value::Null => json!([]),
            p => p.clone(),
        };
        let wanted = status::list_entries(r, &r.current, gw, now);
        let key = format!("{} {}", list.kind, r.key);
        let seen = &r.resource_version;
        if same_ignoring_timestamps(&wanted, &current_parents(&r.current))
            || written.already(&key, &wanted, seen)
        {
            return true;
        }
        let (ns, name) = r.key.split_once('/').unwrap_or(("default", &r.key));
        // The status of a kind served at an older version (BackendTLSPolicy v1alpha3) is
        // written there; the shapes are the same.
        let version = r.served_version.as_deref().unwrap_or(list.api_version);
        let ar = resource(version, list.kind, list.plural);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        for _ in 0..CONFLICT_RETRIES {
            let mut obj = match api.get_opt(name).await {
                Ok(Some(o)) => o,
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!(object = %r.key, error = %e, "cannot read {} for status", list.kind);
                    return false;
                }
            };
            let fresh = obj.data.get("status").cloned().unwrap_or(Value::Null);
            let wanted = status::list_entries(r, &fresh, gw, now);
            if same_ignoring_timestamps(&wanted, &current_parents(&fresh)) {
                return true;
            }
            let mut st = if fresh.is_object() { fresh } else { json!({}) };
            st[list.list] = wanted.clone();
            obj.data["status"] = st;
            match api.replace_status(name, &PostParams::default(), &obj).await {
                Ok(_) => {
                    written.record(key, wanted, seen);
                    tracing::info!(object = %r.key, "{} status written", list.kind);
                    return true;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(object = %r.key, error = %e, "cannot write {} status", list.kind);
                    return false;
                }
            }
        }
        tracing::warn!(object = %r.key, "{} status: resourceVersion conflicts on every attempt; retrying on the next change", list.kind);
        false
    }
}

/// What this replica last wrote per object, and which version of the object its caches
/// showed then.
///
/// After a write, the caches show the old status until the watch event of the write
/// arrives and the snapshot is re-translated (a debounce later); a table swap or another
/// change in that window asked for the same write again (a duplicate apply, seen at
/// start-up and after every route attach). While the caches still show the version we
/// wrote over, the wanted status is compared with what we wrote instead. Any newer
/// version (ours arriving, or someone else's write) ends that, so a status changed behind
/// our back is still put right.
#[derive(Debug, Default)]
pub struct Written {
    /// `Kind namespace/name` -> (status written, resourceVersion seen when writing).
    by_object: std::collections::HashMap<String, (Value, Option<String>)>,
}

impl Written {
    /// Whether `wanted` is what we last wrote over this very version of the object.
    fn already(&self, key: &str, wanted: &Value, seen: &Option<String>) -> bool {
        seen.is_some()
            && self
                .by_object
                .get(key)
                .is_some_and(|(w, s)| s == seen && same_ignoring_timestamps(w, wanted))
    }

    /// Remembers a successful write.
    fn record(&mut self, key: String, wrote: Value, seen: &Option<String>) {
        self.by_object.insert(key, (wrote, seen.clone()));
    }
}

fn resource(version: &str, kind: &str, plural: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", version, kind);
    ApiResource::from_gvk_with_plural(&gvk, plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_not_repeated_over_the_version_it_was_made_against_but_is_after_a_newer_one() {
        let mut w = Written::default();
        let ours = json!({"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "t1"}]});
        let v1 = Some("1".to_string());
        w.record("Gateway default/edge".into(), ours.clone(), &v1);
        let same_later = json!({"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "t2"}]});
        assert!(w.already("Gateway default/edge", &same_later, &v1));
        // Someone else wrote (or our write arrived): a newer version is judged afresh.
        assert!(!w.already("Gateway default/edge", &same_later, &Some("2".into())));
        let different = json!({"conditions": [{"type": "Accepted", "status": "False"}]});
        assert!(!w.already("Gateway default/edge", &different, &v1));
        assert!(!w.already("Gateway default/other", &same_later, &v1));
    }
}
