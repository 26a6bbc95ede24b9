//! One kube-rs watcher per kind (and per namespace for Secrets and ConfigMaps), each
//! feeding a [`Cache`]. A kind that discovery does not find is reported and looked up
//! again later, so a CRD installed after the gateway starts is picked up.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::Settings;
use super::cache::Cache;
use super::client::{self, KindRef};
use super::snapshot::Caches;

/// How often a kind that is not installed (or whose discovery failed) is looked up again.
const REDISCOVER_EVERY: Duration = Duration::from_secs(10);

/// Starts every watch of the provider.
pub fn start_all(
    client: &Client,
    settings: &Settings,
    caches: &Arc<Caches>,
    changed: &Arc<Notify>,
) {
    let gw_ns = Some(settings.gateway.namespace.as_str());
    start(
        client,
        client::GATEWAY_CLASS,
        None,
        &caches.gateway_classes,
        changed,
    );
    start(client, client::GATEWAY, gw_ns, &caches.gateways, changed);
    start(
        client,
        client::HTTP_ROUTE,
        None,
        &caches.http_routes,
        changed,
    );
    start(
        client,
        client::GRPC_ROUTE,
        None,
        &caches.grpc_routes,
        changed,
    );
    start(client, client::TCP_ROUTE, None, &caches.tcp_routes, changed);
    start(client, client::TLS_ROUTE, None, &caches.tls_routes, changed);
    start(
        client,
        client::REFERENCE_GRANT,
        None,
        &caches.reference_grants,
        changed,
    );
    start(
        client,
        client::BACKEND_TLS_POLICY,
        None,
        &caches.backend_tls_policies,
        changed,
    );
    start(
        client,
        client::ISTIO_GATEWAY,
        None,
        &caches.istio_gateways,
        changed,
    );
    start(
        client,
        client::VIRTUAL_SERVICE,
        None,
        &caches.virtual_services,
        changed,
    );
    start(
        client,
        client::GLOO_VIRTUAL_SERVICE,
        None,
        &caches.gloo_virtual_services,
        changed,
    );
    start(
        client,
        client::GLOO_GATEWAY,
        None,
        &caches.gloo_gateways,
        changed,
    );
    start(
        client,
        client::GLOO_UPSTREAM,
        None,
        &caches.gloo_upstreams,
        changed,
    );
    start(
        client,
        client::DESTINATION_RULE,
        None,
        &caches.destination_rules,
        changed,
    );
    start(
        client,
        client::AUTHORIZATION_POLICY,
        None,
        &caches.authorization_policies,
        changed,
    );
    start(
        client,
        client::BACKEND_TRAFFIC_POLICY,
        None,
        &caches.backend_traffic_policies,
        changed,
    );
    start(
        client,
        client::CLIENT_TRAFFIC_POLICY,
        None,
        &caches.client_traffic_policies,
        changed,
    );
    start(client, client::NAMESPACE, None, &caches.namespaces, changed);
    start(client, client::SERVICE, None, &caches.services, changed);
    start(
        client,
        client::ENDPOINT_SLICE,
        None,
        &caches.endpoint_slices,
        changed,
    );
    start(client, client::POD, None, &caches.pods, changed);
    for (ns, secrets, config_maps) in &caches.referenced {
        start(client, client::SECRET, Some(ns), secrets, changed);
        start(client, client::CONFIG_MAP, Some(ns), config_maps, changed);
    }
}

fn start<T: DeserializeOwned + Send + Sync + 'static>(
    client: &Client,
    kind: KindRef,
    namespace: Option<&str>,
    cache: &Arc<Cache<T>>,
    changed: &Arc<Notify>,
) {
    tokio::spawn(watch_kind(
        client.clone(),
        kind,
        namespace.map(str::to_string),
        cache.clone(),
        changed.clone(),
    ));
}

/// Discovers `kind` (until it is installed), then watches it forever.
async fn watch_kind<T: DeserializeOwned + Send + Sync + 'static>(
    client: Client,
    kind: KindRef,
    namespace: Option<String>,
    cache: Arc<Cache<T>>,
    changed: Arc<Notify>,
) {
    let ar = discover_until_installed(&client, kind, &cache, &changed).await;
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let mut events = watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .boxed();
    tracing::info!(%kind, version = %ar.version, namespace = namespace.as_deref().unwrap_or("*"), "watching");
    let typed = kind.typed_api_version();
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => {
                if cache.apply(retag(e, &typed)) {
                    changed.notify_one();
                }
            }
            // The watcher retries with backoff (and relists after 410 Gone); the cache
            // keeps serving what it had.
            Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying"),
        }
    }
}

async fn discover_until_installed<T>(
    client: &Client,
    kind: KindRef,
    cache: &Cache<T>,
    changed: &Notify,
) -> ApiResource {
    let mut reported = false;
    loop {
        match client::discover(client, kind).await {
            Ok(Some(ar)) => {
                cache.set_missing(false);
                cache.set_version(&ar.version);
                return ar;
            }
            Ok(None) => {
                if !reported {
                    tracing::warn!(%kind, "not installed on the API server; not watched (looked up again every {REDISCOVER_EVERY:?})");
                    reported = true;
                    cache.set_missing(true);
                    changed.notify_one();
                }
            }
            Err(e) => tracing::warn!(%kind, error = %e, "discovery failed; retrying"),
        }
        tokio::time::sleep(REDISCOVER_EVERY).await;
    }
}

/// Presents every object as the version its Rust type is derived for: the versions a
/// kind lists carry one schema, but the derived types check `apiVersion`.
fn retag(event: watcher::Event<DynamicObject>, api_version: &str) -> watcher::Event<DynamicObject> {
    use watcher::Event;
    let set = |mut o: DynamicObject| {
        if let Some(t) = o.types.as_mut() {
            t.api_version = api_version.to_string();
        }
        o
    };
    match event {
        Event::Apply(o) => Event::Apply(set(o)),
        Event::InitApply(o) => Event::InitApply(set(o)),
        Event::Delete(o) => Event::Delete(set(o)),
        other => other,
    }
}

/// Watch retry delays: 100 ms doubling to 5 s with jitter, so a returning API server is
/// seen within seconds and many replicas do not reconnect in step.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let base = 100u64 << self.attempt.min(6);
        self.attempt = self.attempt.saturating_add(1);
        let capped = base.min(5_000);
        Some(Duration::from_millis(
            capped / 2 + fastrand::u64(0..=capped / 2),
        ))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}
