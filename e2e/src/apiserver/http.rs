//! The HTTP front: routing of discovery, OpenAPI and resource paths to the store, content
//! negotiation (JSON, Table, aggregated discovery), and the `metav1.Status` error replies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::discovery;
use super::openapi;
use super::patch::{Merger, PatchKind, json_patch, merge_patch};
use super::resources::ResourceType;
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::WriteOptions;
use super::table;
use super::watch::{self, WatchRequest};

/// Response bodies: whole JSON documents, or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// One request, read whole.
struct Call {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.param(k), Some("true" | "1"))
    }

    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The field manager: the parameter, else the User-Agent's product, as the real server.
    fn manager(&self) -> String {
        self.param("fieldManager")
            .map(str::to_string)
            .unwrap_or_else(|| {
                self.header("user-agent")
                    .split('/')
                    .next()
                    .unwrap_or("unknown")
                    .to_string()
            })
    }

    fn write_options(&self, subresource: &str) -> WriteOptions {
        WriteOptions {
            subresource: subresource.into(),
            manager: self.manager(),
            force: self.flag("force"),
            dry_run: self.param("dryRun").is_some(),
        }
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        // Protobuf bodies are refused as the API server refuses them for kinds it cannot
        // encode that way (custom resources); client-go then retries in JSON.
        if self
            .header("content-type")
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".into(),
            ));
        }
        serde_json::from_slice(&self.body)
            .or_else(|_| serde_yaml::from_slice(&self.body))
            .map_err(|e| ApiError::BadRequest(format!("the body could not be decoded: {e}")))
    }
}

/// Serves one request.
pub async fn handle(
    sh: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if let Some(control) = path.strip_prefix("/fixture/") {
        return Ok(super::admin(&sh, control, &query).unwrap_or_else(|e| error(&e)));
    }
    sh.record(
        &parts.method,
        &parts.uri,
        parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    if let Err(e) = sh.faults.before_request().await {
        return Ok(error(&e));
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let call = Call {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    };
    Ok(route(&sh, &path, &call).await.unwrap_or_else(|e| error(&e)))
}

async fn route(sh: &Shared, path: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let reg = sh.store.registry();
    let accept = call.header("accept");
    match segs.as_slice() {
        ["version"] => Ok(json_reply(200, &discovery::version())),
        ["healthz" | "readyz" | "livez"] => Ok(reply(200, "text/plain", Bytes::from_static(b"ok"))),
        ["api"] if discovery::wants_aggregated(accept) => Ok(reply(
            200,
            discovery::AGGREGATED,
            discovery::aggregated(&reg, true).to_string().into(),
        )),
        ["apis"] if discovery::wants_aggregated(accept) => Ok(reply(
            200,
            discovery::AGGREGATED,
            discovery::aggregated(&reg, false).to_string().into(),
        )),
        ["api"] => Ok(json_reply(
            200,
            &discovery::core_versions(&sh.addr.to_string()),
        )),
        ["apis"] => Ok(json_reply(200, &discovery::group_list(&reg))),
        ["apis", group] => discovery::group_doc(&reg, group)
            .map(|d| json_reply(200, &d))
            .ok_or(ApiError::NotServed),
        ["openapi", "v3"] => Ok(json_reply(200, &openapi::root(&reg))),
        ["openapi", "v3", rest @ ..] => openapi::document(&reg, &rest.join("/"))
            .map(|d| json_reply(200, &d))
            .ok_or(ApiError::NotServed),
        ["api", version] => discovery::resource_list(&reg, "", version)
            .map(|d| json_reply(200, &d))
            .ok_or(ApiError::NotServed),
        ["apis", group, version] => discovery::resource_list(&reg, group, version)
            .map(|d| json_reply(200, &d))
            .ok_or(ApiError::NotServed),
        ["api", version, rest @ ..] => resource(sh, call, "", version, rest).await,
        ["apis", group, version, rest @ ..] => resource(sh, call, group, version, rest).await,
        _ => Err(ApiError::NotServed),
    }
}

/// A resource path resolved.
struct Target {
    rt: Arc<ResourceType>,
    version: String,
    ns: String,
    name: Option<String>,
    sub: String,
}

fn target(sh: &Shared, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, more @ ..] if !matches!(*plural, "status" | "finalize") => {
            (ns.to_string(), [&[*plural][..], more].concat())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let rt = sh
        .store
        .registry()
        .find(group, version, rest[0])
        .ok_or(ApiError::NotServed)?;
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    let scoped_right = if name.is_some() {
        rt.namespaced != ns.is_empty()
    } else {
        rt.namespaced || ns.is_empty()
    };
    if !scoped_right
        || rest.len() > 3
        || !(sub.is_empty() || (sub == "status" && rt.status_subresource))
    {
        return Err(ApiError::NotServed);
    }
    Ok(Target {
        rt,
        version: version.into(),
        ns,
        name,
        sub,
    })
}

async fn resource(
    sh: &Shared,
    call: &Call,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let t = target(sh, group, version, rest)?;
    let Some(name) = t.name.clone() else {
        return match call.method {
            Method::GET if call.flag("watch") => watch(sh, call, &t),
            Method::GET => list(sh, call, &t),
            Method::POST => create(sh, call, &t),
            Method::DELETE => delete_collection(sh, call, &t),
            _ => Err(ApiError::MethodNotAllowed),
        };
    };
    match call.method {
        Method::GET => {
            let obj = sh.store.get(&t.rt, &t.ns, &name)?;
            Ok(object_reply(
                200,
                call,
                &t,
                obj,
                sh.store.resource_version(),
            ))
        }
        Method::PUT => update(sh, call, &t, &name),
        Method::PATCH => patch(sh, call, &t, &name),
        Method::DELETE => {
            let opts = if call.body.is_empty() {
                Value::Null
            } else {
                call.json_body()?
            };
            let uid = opts.pointer("/preconditions/uid").and_then(Value::as_str);
            let out = sh.store.delete(&t.rt, &t.ns, &name, uid)?;
            if out["kind"] == "Status" {
                return Ok(json_reply(200, &out));
            }
            Ok(object_reply(
                200,
                call,
                &t,
                out,
                sh.store.resource_version(),
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn list(sh: &Shared, call: &Call, t: &Target) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(call.param("fieldSelector").unwrap_or(""), t.rt.custom)?;
    let limit = call
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (start, token_rv) = match call.param("continue") {
        Some(token) => decode_continue(token)?,
        None => (None, None),
    };
    // Only the newest snapshot is kept, so an exact read of any other version has expired.
    if let (Some("Exact"), Some(rv)) = (
        call.param("resourceVersionMatch"),
        call.param("resourceVersion"),
    ) && rv.parse::<u64>().ok() != Some(sh.store.resource_version())
    {
        return Err(ApiError::Expired(format!(
            "too old resource version: {rv} ({})",
            sh.store.resource_version()
        )));
    }
    let page = sh.store.list(
        &t.rt,
        &t.ns,
        |o| labels.matches(o) && fields.matches(o),
        start.as_deref(),
        limit,
    );
    let rv = token_rv.unwrap_or(page.rv);
    let api_version = t.rt.api_version(&t.version);
    if table::wanted(call.header("accept")) {
        return Ok(json_reply(
            200,
            &table::table(&t.rt, &t.version, &page.items, rv),
        ));
    }
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|mut o| {
            o["apiVersion"] = json!(api_version);
            o["kind"] = json!(t.rt.kind);
            o
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((last, remaining)) = page.next {
        meta["continue"] = json!(encode_continue(&last, rv));
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(json_reply(
        200,
        &json!({"kind": format!("{}List", t.rt.kind), "apiVersion": api_version, "metadata": meta, "items": items}),
    ))
}

/// `deletecollection`: deletes each object the selectors match; answers with their list.
fn delete_collection(sh: &Shared, call: &Call, t: &Target) -> Result<Response<Body>, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(call.param("fieldSelector").unwrap_or(""), t.rt.custom)?;
    let page = sh.store.list(
        &t.rt,
        &t.ns,
        |o| labels.matches(o) && fields.matches(o),
        None,
        usize::MAX,
    );
    let mut items = Vec::new();
    for obj in page.items {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match sh.store.delete(&t.rt, ns, name, None) {
            Ok(_) => items.push(obj),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(&t.version),
        "metadata": {"resourceVersion": sh.store.resource_version().to_string()}, "items": items});
    Ok(json_reply(200, &list))
}

fn encode_continue(start: &str, rv: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Result<(Option<String>, Option<u64>), ApiError> {
    use base64::Engine;
    let bad = || ApiError::BadRequest("continue key is not valid".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((v["start"].as_str().map(str::to_string), v["rv"].as_u64()))
}

fn watch(sh: &Shared, call: &Call, t: &Target) -> Result<Response<Body>, ApiError> {
    let resource_version = match call.param("resourceVersion") {
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv}")))?,
        ),
        None => None,
    };
    let req = WatchRequest {
        rt: t.rt.clone(),
        version: t.version.clone(),
        ns: t.ns.clone(),
        labels: LabelSelector::parse(call.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(call.param("fieldSelector").unwrap_or(""), t.rt.custom)?,
        resource_version,
        bookmarks: call.flag("allowWatchBookmarks"),
        send_initial_events: call.flag("sendInitialEvents"),
        timeout: call
            .param("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(std::time::Duration::from_secs),
        bookmark_interval: sh.bookmark_interval,
    };
    let as_table = table::wanted(call.header("accept"));
    let (rt, version) = (t.rt.clone(), t.version.clone());
    let events = ReceiverStream::new(watch::start(&sh.store, req)).map(move |line| {
        let line = if as_table {
            table::watch_event(&rt, &version, &line)
        } else {
            line
        };
        Ok::<_, Infallible>(Frame::data(line))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(StreamBody::new(events).boxed())
        .expect("valid response"))
}

fn create(sh: &Shared, call: &Call, t: &Target) -> Result<Response<Body>, ApiError> {
    let obj = call.json_body()?;
    check_namespace(t, &obj)?;
    validate_fields(call, t, &obj)?;
    let created = sh
        .store
        .create(&t.rt, &t.version, &t.ns, obj, &call.write_options(""))?;
    Ok(object_reply(
        201,
        call,
        t,
        created,
        sh.store.resource_version(),
    ))
}

fn update(sh: &Shared, call: &Call, t: &Target, name: &str) -> Result<Response<Body>, ApiError> {
    let obj = call.json_body()?;
    check_namespace(t, &obj)?;
    if obj.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    validate_fields(call, t, &obj)?;
    let out = sh.store.write(
        &t.rt,
        &t.version,
        &t.ns,
        name,
        &call.write_options(&t.sub),
        |live, w| {
            let Some(live) = live else {
                return Err(ApiError::not_found(&t.rt.key(), name));
            };
            let mut new = obj.clone();
            w.record_update(Some(live), &mut new);
            Ok(new)
        },
    )?;
    Ok(object_reply(200, call, t, out, sh.store.resource_version()))
}

fn patch(sh: &Shared, call: &Call, t: &Target, name: &str) -> Result<Response<Body>, ApiError> {
    let kind = PatchKind::from_content_type(call.header("content-type"))
        .ok_or_else(|| ApiError::UnsupportedMediaType(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}", if t.rt.custom { "" } else { ", application/strategic-merge-patch+json" })))?;
    if kind == PatchKind::Strategic && t.rt.custom {
        return Err(ApiError::UnsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into()));
    }
    let body = call.json_body()?;
    if kind == PatchKind::Apply {
        if call.param("fieldManager").is_none() {
            return Err(ApiError::Invalid { message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(), details: None });
        }
        check_namespace(t, &body)?;
        validate_fields(call, t, &body)?;
    }
    let opts = call.write_options(&t.sub);
    let out = sh
        .store
        .write(&t.rt, &t.version, &t.ns, name, &opts, |live, w| {
            if kind == PatchKind::Apply {
                let mut applied = body.clone();
                applied["metadata"]["name"] = json!(name);
                return w.apply(live, &applied, opts.force);
            }
            let Some(live) = live else {
                return Err(ApiError::not_found(&t.rt.key(), name));
            };
            let mut new = match kind {
                PatchKind::Json => json_patch(live, &body)?,
                PatchKind::Merge => merge_patch(live, &body),
                _ => Merger {
                    rt: &t.rt,
                    version: &t.version,
                    strategic: true,
                }
                .merge(live, &body)?,
            };
            // A patch that names no resourceVersion must not trip the precondition check.
            if body.pointer("/metadata/resourceVersion").is_none() {
                new["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
            }
            w.record_update(Some(live), &mut new);
            Ok(new)
        })?;
    Ok(object_reply(200, call, t, out, sh.store.resource_version()))
}

fn check_namespace(t: &Target, obj: &Value) -> Result<(), ApiError> {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if t.rt.namespaced && ns != t.ns => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// `fieldValidation=Strict` on custom resources: unknown fields (not in the CRD schema and
/// not under x-kubernetes-preserve-unknown-fields) are an error, as kubectl relies on.
fn validate_fields(call: &Call, t: &Target, obj: &Value) -> Result<(), ApiError> {
    if !t.rt.custom || call.param("fieldValidation") != Some("Strict") {
        return Ok(());
    }
    let Some(schema) = t.rt.schemas.get(&t.version) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    unknown_fields(schema, obj, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    let kind = &t.rt.kind;
    Err(ApiError::BadRequest(format!(
        "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
        t.version,
        list.join(", ")
    )))
}

fn unknown_fields(schema: &Value, obj: &Value, prefix: &str, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        return;
    }
    match obj {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in m {
                if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match props.and_then(|p| p.get(k)).or(extra) {
                    Some(s) => unknown_fields(s, v, &path, out),
                    None if props.is_some() || schema.get("type") == Some(&json!("object")) => {
                        out.push(path)
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(s, item, &format!("{prefix}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn object_reply(code: u16, call: &Call, t: &Target, mut obj: Value, rv: u64) -> Response<Body> {
    obj["apiVersion"] = json!(t.rt.api_version(&t.version));
    obj["kind"] = json!(t.rt.kind);
    if table::wanted(call.header("accept")) {
        return json_reply(
            code,
            &table::table(&t.rt, &t.version, std::slice::from_ref(&obj), rv),
        );
    }
    json_reply(code, &obj)
}

fn reply(code: u16, content_type: &str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private")
        .body(Full::new(body).boxed())
        .expect("valid response")
}

/// A JSON reply.
pub fn json_reply(code: u16, v: &Value) -> Response<Body> {
    reply(code, "application/json", Bytes::from(v.to_string()))
}

/// The Status reply for an error (with Retry-After for an injected 429 or 503).
pub fn error(e: &ApiError) -> Response<Body> {
    let mut resp = json_reply(e.code(), &e.to_status());
    if let ApiError::Injected {
        retry_after: Some(s),
        ..
    } = e
    {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("digits"));
    }
    resp
}
