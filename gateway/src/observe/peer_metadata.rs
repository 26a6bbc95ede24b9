//! Istio's peer-metadata headers, sent on requests to mesh upstreams so that the
//! destination's sidecar reports the gateway as the source workload
//! (`reporter="destination"` series: the ones Kiali's graph draws edges into mesh
//! workloads from).
//!
//! The format is the one istio/proxy's `io.istio.http.peer_metadata` filter sends with
//! `upstream_propagation: istio_headers` (Istio 1.19 and later; `MXPropagationMethod` in
//! `source/extensions/filters/http/peer_metadata/filter.cc`):
//!
//! - `x-envoy-peer-metadata-id`: the proxy's node id; a gateway's is
//!   `router~<pod ip>~<pod>.<namespace>~<namespace>.svc.<cluster domain>`. Receivers use
//!   it only as the key of their decoded-metadata cache.
//! - `x-envoy-peer-metadata`: base64 (standard, padded) of a deterministically serialized
//!   `google.protobuf.Struct`, built as `convertWorkloadMetadataToStruct` builds it:
//!   `NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `CLUSTER_ID`, `OWNER`
//!   (`kubernetes://apis/apps/v1/namespaces/<ns>/deployments/<workload>`) and `LABELS` with
//!   `app`, `version`, `service.istio.io/canonical-name` and
//!   `service.istio.io/canonical-revision`. `MESH_ID` is added as well: Istio 1.18 and
//!   earlier sent the whole node metadata, of which `MESH_ID` is the one further key their
//!   receivers read; 1.19+ receivers ignore keys they do not know.
//!
//! The Struct is built with `prost-types` and encoded by `prost`; `BTreeMap` fields give
//! the sorted key order of protobuf's deterministic serialization.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use prost_types::{Struct, Value};

use super::istio_metrics::{UNKNOWN, Workload};

/// The peer's node id.
pub const PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");
/// The peer's metadata (base64 of a serialized `google.protobuf.Struct`).
pub const PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");

/// Istio's proxy type for gateways in a node id (sidecars are `sidecar`).
const NODE_TYPE: &str = "router";

/// Where the gateway's own node metadata comes from (its flags).
#[derive(Debug, Clone)]
pub struct NodeMetadata {
    /// The pod's name (`NAME`).
    pub pod_name: String,
    /// The pod's IP, for the node id (`unknown` when not given).
    pub instance_ip: String,
    /// Kubernetes cluster domain, for the node id.
    pub cluster_domain: String,
    /// Istio mesh id (`MESH_ID`).
    pub mesh_id: String,
    /// The gateway's workload labels as the Istio metrics report them (namespace,
    /// workload name, app, version, canonical service and revision, cluster id).
    pub workload: Workload,
}

/// The two headers, encoded once at start; inserting them is two `HeaderValue` clones.
#[derive(Debug, Clone)]
pub struct PeerMetadata {
    id: HeaderValue,
    value: HeaderValue,
}

/// Why the headers could not be made from the gateway's flags.
#[derive(Debug, thiserror::Error)]
#[error("peer metadata header {header}: value {value:?} is not a valid header value")]
pub struct PeerMetadataError {
    header: HeaderName,
    value: String,
}

impl PeerMetadata {
    /// The headers for this node.
    pub fn new(node: &NodeMetadata) -> Result<PeerMetadata, PeerMetadataError> {
        let value =
            base64::engine::general_purpose::STANDARD.encode(node.to_struct().encode_to_vec());
        let header = |header: HeaderName, value: String| {
            HeaderValue::from_str(&value).map_err(|_| PeerMetadataError { header, value })
        };
        Ok(PeerMetadata {
            id: header(PEER_METADATA_ID, node.node_id())?,
            value: header(PEER_METADATA, value)?,
        })
    }

    /// Sets both headers (replacing any from the client) on a request to a mesh upstream.
    pub fn insert(&self, headers: &mut HeaderMap) {
        headers.insert(PEER_METADATA_ID, self.id.clone());
        headers.insert(PEER_METADATA, self.value.clone());
    }
}

/// Removes both headers: an edge client must not speak to the mesh as the gateway.
pub fn remove(headers: &mut HeaderMap) {
    headers.remove(PEER_METADATA_ID);
    headers.remove(PEER_METADATA);
}

impl NodeMetadata {
    /// Istio's node id for a gateway pod.
    pub fn node_id(&self) -> String {
        let ns = &self.workload.namespace;
        format!(
            "{NODE_TYPE}~{ip}~{pod}.{ns}~{ns}.svc.{domain}",
            ip = self.instance_ip,
            pod = self.pod_name,
            domain = self.cluster_domain
        )
    }

    /// The Struct Istio's peer-metadata filter sends. Keys whose value is unknown are left
    /// out, as Istio leaves out empty ones.
    pub fn to_struct(&self) -> Struct {
        let w = &self.workload;
        let known = |v: &str| (!v.is_empty() && v != UNKNOWN).then(|| Value::from(v));
        let mut labels = BTreeMap::new();
        for (key, value) in [
            ("service.istio.io/canonical-name", &w.canonical_service),
            ("service.istio.io/canonical-revision", &w.canonical_revision),
            ("app", &w.app),
            ("version", &w.version),
        ] {
            labels.extend(known(value).map(|v| (key.to_string(), v)));
        }
        let owner = (w.name.as_ref() != UNKNOWN && w.namespace.as_ref() != UNKNOWN).then(|| {
            format!(
                "kubernetes://apis/apps/v1/namespaces/{}/deployments/{}",
                w.namespace, w.name
            )
        });
        let mut fields: BTreeMap<String, Value> = [
            ("NAME", known(&self.pod_name)),
            ("NAMESPACE", known(&w.namespace)),
            ("WORKLOAD_NAME", known(&w.name)),
            ("CLUSTER_ID", known(&w.cluster)),
            ("MESH_ID", known(&self.mesh_id)),
            ("OWNER", owner.as_deref().and_then(known)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
        fields.insert("LABELS".into(), Value::from(labels));
        Struct { fields }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::value::Kind;

    fn node() -> NodeMetadata {
        let labels = [
            ("app", "meshgate"),
            ("version", "v2"),
            ("istio", "ingressgateway"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        NodeMetadata {
            pod_name: "meshgate-7d9f-abcde".into(),
            instance_ip: "10.1.2.3".into(),
            cluster_domain: "cluster.local".into(),
            mesh_id: "mesh1".into(),
            workload: Workload::from_labels(
                "meshgate",
                "istio-ingress",
                "spiffe://cluster.local/ns/istio-ingress/sa/meshgate",
                &labels,
                "Kubernetes",
            ),
        }
    }

    fn string(v: &Value) -> &str {
        match &v.kind {
            Some(Kind::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn the_header_decodes_to_istios_node_metadata_struct() {
        let h = PeerMetadata::new(&node()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(h.value.as_bytes())
            .unwrap();
        let s = Struct::decode(bytes.as_slice()).unwrap();
        let get = |k: &str| string(&s.fields[k]).to_string();
        assert_eq!(get("NAME"), "meshgate-7d9f-abcde");
        assert_eq!(get("NAMESPACE"), "istio-ingress");
        assert_eq!(get("WORKLOAD_NAME"), "meshgate");
        assert_eq!(get("CLUSTER_ID"), "Kubernetes");
        assert_eq!(get("MESH_ID"), "mesh1");
        assert_eq!(
            get("OWNER"),
            "kubernetes://apis/apps/v1/namespaces/istio-ingress/deployments/meshgate"
        );
        let Some(Kind::StructValue(labels)) = &s.fields["LABELS"].kind else {
            panic!("LABELS is not a Struct: {s:?}");
        };
        let labels: BTreeMap<&str, &str> = labels
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), string(v)))
            .collect();
        // Only the four labels Istio's filter sends; the canonical ones by Istio's rules.
        let want = BTreeMap::from([
            ("app", "meshgate"),
            ("version", "v2"),
            ("service.istio.io/canonical-name", "meshgate"),
            ("service.istio.io/canonical-revision", "v2"),
        ]);
        assert_eq!(labels, want);
        assert_eq!(s.fields.len(), 7, "{:?}", s.fields.keys());
        assert_eq!(
            h.id.to_str().unwrap(),
            "router~10.1.2.3~meshgate-7d9f-abcde.istio-ingress~istio-ingress.svc.cluster.local"
        );
    }

    #[test]
    fn unknown_values_are_left_out_as_istio_leaves_out_empty_ones() {
        let mut n = node();
        n.workload = Workload::unknown();
        n.mesh_id = String::new();
        let s = n.to_struct();
        assert_eq!(s.fields.keys().collect::<Vec<_>>(), ["LABELS", "NAME"]);
    }

    #[test]
    fn insert_replaces_what_a_client_sent_and_remove_clears_both() {
        let h = PeerMetadata::new(&node()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(PEER_METADATA, HeaderValue::from_static("Zm9yZ2Vk"));
        headers.append(PEER_METADATA, HeaderValue::from_static("c2Vjb25k"));
        headers.insert(PEER_METADATA_ID, HeaderValue::from_static("sidecar~forged"));
        h.insert(&mut headers);
        assert_eq!(headers.get_all(PEER_METADATA).iter().count(), 1);
        assert_eq!(headers[PEER_METADATA], h.value);
        assert_eq!(headers[PEER_METADATA_ID], h.id);
        remove(&mut headers);
        assert!(headers.is_empty());
    }
}
