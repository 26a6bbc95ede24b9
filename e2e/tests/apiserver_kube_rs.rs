//! kube-rs (client, watcher, reflector) against the Kubernetes API server fixture: the
//! reflector syncs and converges to a fresh list after a dropped watch, a 410, a new
//! resourceVersion epoch and a 5xx burst; Leases are written with optimistic concurrency;
//! server-side apply conflicts; the status subresource keeps spec and status apart.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::apiserver::ApiServer;
use e2e::testing::eventually;
use e2e::tools::workspace_root;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

async fn fixture() -> (ApiServer, Client) {
    let server = ApiServer::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("start fixture");
    let config = Config::new(server.url().parse().expect("url"));
    let client = Client::try_from(config).expect("client");
    (server, client)
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "demo"}}, "data": {"k": value}}),
    )
    .expect("config map")
}

/// Retries quickly, so tests wait on conditions rather than on kube-rs's production backoff.
struct QuickBackoff(u32);

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.0 += 1;
        Some(Duration::from_millis(50 * u64::from(self.0.min(4))))
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// A running reflector over ConfigMaps in `default`, with the errors its watcher reported.
struct Reflected {
    reader: Store<ConfigMap>,
    errors: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reflected {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reflect(client: &Client, cfg: watcher::Config) -> Reflected {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let stream = watcher(api, cfg).backoff(QuickBackoff(0)).reflect(writer);
    let task = tokio::spawn(async move {
        stream
            .for_each(|ev| {
                if let Err(e) = ev {
                    seen.lock().unwrap().push(format!("{e:?}"));
                }
                std::future::ready(())
            })
            .await
    });
    tokio::time::timeout(WAIT, reader.wait_until_ready())
        .await
        .expect("reflector synced")
        .expect("writer alive");
    Reflected {
        reader,
        errors,
        task,
    }
}

/// name -> (resourceVersion, data) of a fresh list.
/// None while the server answers with an (injected) error.
async fn fresh_list(client: &Client) -> Option<BTreeMap<String, (String, Value)>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    // limit=1000 tells these lists apart from the watcher's own in the request log.
    let list = api.list(&ListParams::default().limit(1000)).await.ok()?;
    Some(list.items.iter().map(summary).collect())
}

fn summary(cm: &ConfigMap) -> (String, (String, Value)) {
    (
        cm.metadata.name.clone().unwrap_or_default(),
        (
            cm.metadata.resource_version.clone().unwrap_or_default(),
            json!(cm.data),
        ),
    )
}

/// Waits until the reflector's store equals a fresh list; panics with both if it never does.
async fn converges(client: &Client, r: &Reflected) {
    let ok = eventually(WAIT, || async {
        let cached: BTreeMap<_, _> = r.reader.state().iter().map(|c| summary(c)).collect();
        (Some(cached) == fresh_list(client).await).then_some(())
    })
    .await;
    let cached: BTreeMap<_, _> = r.reader.state().iter().map(|c| summary(c)).collect();
    assert!(
        ok.is_some(),
        "reflector never converged:\ncached {cached:?}\nfresh {:?}\nerrors {:?}",
        fresh_list(client).await,
        r.errors.lock().unwrap()
    );
}

async fn seed_config_maps(client: &Client, n: usize) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..n {
        api.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i}"), "v1"),
        )
        .await
        .expect("create");
    }
}

/// Mutations made while the reflector is disconnected: one create, one update, one delete.
async fn mutate_behind_its_back(client: &Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("late", "new"))
        .await
        .expect("create");
    api.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .expect("patch");
    api.delete("cm-1", &DeleteParams::default())
        .await
        .expect("delete");
}

async fn mutate_later(client: &Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("later", "x"))
        .await
        .expect("create");
}

fn list_requests_since(server: &ApiServer, from: usize) -> usize {
    server.requests()[from..]
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.uri.starts_with("/api/v1/namespaces/default/configmaps")
                && !r.uri.contains("watch=true")
                && !r.uri.contains("limit=1000")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_syncs_then_resumes_a_dropped_watch_without_relisting() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let r = reflect(&client, watcher::Config::default()).await;
    converges(&client, &r).await;
    let mark = server.requests().len();
    server.drop_watches();
    mutate_behind_its_back(&client).await;
    converges(&client, &r).await;
    assert_eq!(
        list_requests_since(&server, mark),
        0,
        "a dropped watch is resumed from its resourceVersion, not relisted: {:?}",
        &server.requests()[mark..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_relists_after_410_expired() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let r = reflect(&client, watcher::Config::default()).await;
    let mark = server.requests().len();
    // History compacted past what the watcher saw, then its watch cut: the resume gets 410,
    // and only a relist can show what changed since.
    server.store().compact();
    server.drop_watches();
    mutate_behind_its_back(&client).await;
    converges(&client, &r).await;
    assert!(
        r.errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("410") && e.contains("Expired")),
        "the watcher saw the 410 Expired: {:?}",
        r.errors.lock().unwrap()
    );
    assert!(
        list_requests_since(&server, mark) >= 1,
        "after 410 the watcher relists: {:?}",
        &server.requests()[mark..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_relists_after_an_epoch_restart() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let r = reflect(&client, watcher::Config::default()).await;
    let mark = server.requests().len();
    server.store().restart_epoch();
    mutate_behind_its_back(&client).await;
    converges(&client, &r).await;
    assert!(
        list_requests_since(&server, mark) >= 1,
        "a new epoch forces a relist"
    );
    for cm in r.reader.state() {
        let rv: u64 = cm
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap();
        assert!(
            rv > 1_000_000,
            "{:?} carries a resourceVersion of the new epoch, got {rv}",
            cm.metadata.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_rides_out_a_5xx_burst() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let r = reflect(&client, watcher::Config::default()).await;
    mutate_behind_its_back(&client).await;
    // 500s reach the watcher (kube's client retries only 429/503/504 itself).
    server.faults().fail_next(500, 3);
    server.drop_watches();
    // Only the watcher talks to the server until the 500s are spent (the convergence
    // check lists too, and must not take them).
    let spent = eventually(WAIT, || async {
        (server.faults().injected() == 3).then_some(())
    })
    .await;
    assert!(spent.is_some(), "every injected 500 was served");
    converges(&client, &r).await;
    assert!(
        r.errors.lock().unwrap().iter().any(|e| e.contains("500")),
        "the watcher saw the 500s: {:?}",
        r.errors.lock().unwrap()
    );
    // 503s are retried inside kube's client; the watcher rides them out as well.
    server.faults().fail_next(503, 3);
    server.drop_watches();
    mutate_later(&client).await;
    converges(&client, &r).await;
    assert_eq!(
        server.faults().injected(),
        6,
        "every injected 503 was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_get_429_with_retry_after_then_succeed() {
    let (server, client) = fixture().await;
    server.faults().fail_next(429, 1);
    let (code, body, retry_after) =
        raw_get(server.addr(), "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 429);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["details"]["retryAfterSeconds"], 1);
    // kube's client waits out Retry-After and retries by itself.
    server.faults().fail_next(429, 1);
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(
        api.list(&ListParams::default()).await.is_ok(),
        "kube retried after Retry-After"
    );
    assert_eq!(server.faults().injected(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_syncs_from_initial_events() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let r = reflect(&client, watcher::Config::default().streaming_lists()).await;
    converges(&client, &r).await;
    assert!(
        server
            .requests()
            .iter()
            .any(|q| q.uri.contains("sendInitialEvents=true")),
        "kube-rs asked for initial events"
    );
    assert_eq!(
        list_requests_since(&server, 0),
        0,
        "the watcher streamed its initial state instead of listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_limit_and_continue() {
    let (_server, client) = fixture().await;
    seed_config_maps(&client, 5).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut token = first.metadata.continue_;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version, first.metadata.resource_version,
            "pages share the first page's resourceVersion"
        );
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        token = page.metadata.continue_;
    }
    assert_eq!(names, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_filter_lists_and_deletecollection() {
    let (_server, client) = fixture().await;
    seed_config_maps(&client, 3).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "other", "labels": {"app": "else"}}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=demo"))
                .await
                .unwrap()
        ),
        ["cm-0", "cm-1", "cm-2"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (else),app!=demo"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=cm-1"))
                .await
                .unwrap()
        ),
        ["cm-1"]
    );
    let all: Api<ConfigMap> = Api::all(client);
    assert_eq!(
        names(
            all.list(
                &ListParams::default()
                    .fields("metadata.namespace=default,metadata.name!=other")
                    .labels("app")
            )
            .await
            .unwrap()
        ),
        ["cm-0", "cm-1", "cm-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_writers_conflict_on_stale_resource_version_and_the_loser_retries() {
    let (_server, client) = fixture().await;
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("gateway-status".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("nobody".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await.unwrap();
    // Both writers read the same version.
    let mut a = leases.get("gateway-status").await.unwrap();
    let mut b = leases.get("gateway-status").await.unwrap();
    a.spec.as_mut().unwrap().holder_identity = Some("pod-a".into());
    b.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let won = leases
        .replace("gateway-status", &PostParams::default(), &a)
        .await
        .unwrap();
    let lost = leases
        .replace("gateway-status", &PostParams::default(), &b)
        .await
        .expect_err("stale write must fail");
    let kube::Error::Api(status) = lost else {
        panic!("expected an API error, got {lost:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    // The loser re-reads, sees the winner, and retries on the fresh version.
    let mut fresh = leases.get("gateway-status").await.unwrap();
    assert_eq!(
        fresh.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("pod-a")
    );
    assert_eq!(
        fresh.metadata.resource_version,
        won.metadata.resource_version
    );
    fresh.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let retried = leases
        .replace("gateway-status", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(
        retried.spec.unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    assert_ne!(
        retried.metadata.resource_version,
        won.metadata.resource_version
    );
}

fn httproutes(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "httproutes"),
    )
}

fn seed_gateway_api(server: &ApiServer) {
    server
        .seed_file(&workspace_root().join("e2e/tests/fixtures/apiserver/crds/gateway-api.yaml"))
        .expect("CRDs");
}

fn route(hostname: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
           "spec": {"hostnames": [hostname], "parentRefs": [{"name": "meshgate"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_without_force_and_force_takes_ownership() {
    let (server, client) = fixture().await;
    seed_gateway_api(&server);
    let api = httproutes(&client);
    let created = api
        .patch(
            "web",
            &PatchParams::apply("team-a"),
            &Patch::Apply(route("a.example.com")),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let err = api
        .patch(
            "web",
            &PatchParams::apply("team-b"),
            &Patch::Apply(route("b.example.com")),
        )
        .await
        .expect_err("conflict");
    let kube::Error::Api(status) = err else {
        panic!("expected API error, got {err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("conflict with \"team-a\"")
            && status.message.contains(".spec.hostnames"),
        "{}",
        status.message
    );
    let only_hostnames = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}, "spec": {"hostnames": ["b.example.com"]}});
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("team-b").force(),
            &Patch::Apply(only_hostnames),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["hostnames"], json!(["b.example.com"]));
    assert_eq!(forced.metadata.generation, Some(2));
    let owners: Vec<(String, String)> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.manager.clone().unwrap(),
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let b = owners
        .iter()
        .find(|(m, _)| m == "team-b")
        .expect("team-b owns fields");
    assert!(
        b.1.contains("f:hostnames"),
        "team-b owns spec.hostnames (an atomic list): {owners:?}"
    );
    let a = owners
        .iter()
        .find(|(m, _)| m == "team-a")
        .expect("team-a keeps the rest");
    assert!(
        !a.1.contains("f:hostnames") && a.1.contains("f:parentRefs"),
        "team-a lost hostnames, kept parentRefs: {owners:?}"
    );
    // Applying without a field it used to own removes it, when nobody else owns it.
    api.patch("web", &PatchParams::apply("team-a"), &Patch::Apply(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}, "spec": {}}))).await.unwrap();
    let after = api.get("web").await.unwrap();
    assert!(
        after.data["spec"].get("parentRefs").is_none(),
        "parentRefs removed with its only owner: {}",
        after.data
    );
    assert_eq!(
        after.data["spec"]["hostnames"],
        json!(["b.example.com"]),
        "team-b's field stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_keeps_spec_and_status_apart_and_generation_follows_spec() {
    let (server, client) = fixture().await;
    seed_gateway_api(&server);
    let api = httproutes(&client);
    let mut obj: DynamicObject = serde_json::from_value(route("a.example.com")).unwrap();
    obj.data["status"] =
        json!({"parents": [{"controllerName": "sneaky", "parentRef": {"name": "x"}}]});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create: {}",
        created.data
    );
    let uid = created.metadata.uid.clone();
    let status = json!({"status": {"parents": [{"controllerName": "meshgate.io/gateway", "parentRef": {"name": "meshgate"}, "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}]}]}});
    let with_status = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status writes leave generation alone"
    );
    assert_eq!(
        with_status.data["status"]["parents"][0]["controllerName"],
        "meshgate.io/gateway"
    );
    let spec = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostnames": ["b.example.com"]}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(
        spec.metadata.generation,
        Some(2),
        "spec changes bump generation"
    );
    assert_eq!(
        spec.data["status"], with_status.data["status"],
        "a main-resource write cannot touch status"
    );
    assert_eq!(spec.metadata.uid, uid);
    let rv_before = spec.metadata.resource_version.clone();
    let noop = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostnames": ["b.example.com"]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        noop.metadata.resource_version, rv_before,
        "a no-op write keeps the resourceVersion"
    );
    let strategic = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {}})),
        )
        .await
        .expect_err("custom resources take no strategic merge patch");
    let kube::Error::Api(s) = strategic else {
        panic!("expected API error")
    };
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_resource_version_is_an_error_event_with_410() {
    let (server, client) = fixture().await;
    seed_config_maps(&client, 1).await;
    server.store().compact();
    let (code, body, _) = raw_get(
        server.addr(),
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2",
    )
    .await;
    assert_eq!(
        code, 200,
        "the real server answers 200 and reports expiry in the stream"
    );
    assert_eq!(body["type"], "ERROR");
    assert_eq!(body["object"]["kind"], "Status");
    assert_eq!(body["object"]["code"], 410);
    assert_eq!(body["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_metav1_status_objects() {
    let (_server, client) = fixture().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let missing = api.get("nope").await.expect_err("not found");
    let kube::Error::Api(s) = missing else {
        panic!()
    };
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );
    api.create(&PostParams::default(), &config_map("dup", "1"))
        .await
        .unwrap();
    let dup = api
        .create(&PostParams::default(), &config_map("dup", "1"))
        .await
        .expect_err("exists");
    let kube::Error::Api(s) = dup else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    let nowhere: Api<ConfigMap> = Api::namespaced(client, "no-such-namespace");
    let e = nowhere
        .create(&PostParams::default(), &config_map("x", "1"))
        .await
        .expect_err("namespace missing");
    let kube::Error::Api(s) = e else { panic!() };
    assert_eq!(
        (s.code, s.message.as_str()),
        (404, "namespaces \"no-such-namespace\" not found")
    );
}

/// GET with a plain HTTP/1.1 client: status, first JSON line of the body, Retry-After.
async fn raw_get(addr: SocketAddr, path: &str) -> (u16, Value, Option<String>) {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body ends")
        .unwrap()
        .to_bytes();
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    (
        code,
        serde_json::from_slice(first).unwrap_or(Value::Null),
        retry,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_drive_the_same_controls() {
    let (server, client) = fixture().await;
    let (code, body, _) = raw_get(server.addr(), "/fixture/fail?code=503&count=1").await;
    assert_eq!((code, body["ok"].as_str()), (200, Some("fail")));
    let (code, body, _) = raw_get(server.addr(), "/api/v1/namespaces").await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    let before: u64 = raw_get(server.addr(), "/fixture/restart-epoch").await.1["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        before >= 1_000_000,
        "a new epoch starts a new resourceVersion range: {before}"
    );
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(api.list(&ListParams::default()).await.is_ok());
}
