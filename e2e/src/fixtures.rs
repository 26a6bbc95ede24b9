//! YAML fixtures: the Kubernetes objects tests feed the gateway (file provider or the
//! API server fixture).

/// A Service `name` (namespace `default`, port 80 named `http`) whose EndpointSlice
/// points at `127.0.0.1:<port>`.
pub fn local_service(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
  - addresses: [127.0.0.1]
"#
    )
}

/// A Gateway `default/edge` (class `meshgate`) with one HTTP listener `http` on `port`.
pub fn http_gateway(port: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: default}}
spec:
  gatewayClassName: meshgate
  listeners:
    - {{name: http, port: {port}, protocol: HTTP}}
"#
    )
}

/// Joins YAML documents into one multi-document text.
pub fn docs(parts: &[&str]) -> String {
    parts.join("\n---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_valid_yaml_documents_of_the_named_kinds() {
        let text = docs(&[&local_service("httpbin", 8000), &http_gateway(8080)]);
        let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| {
                let v = serde_yaml::Value::deserialize(d).unwrap();
                v["kind"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(kinds, ["Service", "EndpointSlice", "Gateway"]);
    }

    use serde::Deserialize;
}
