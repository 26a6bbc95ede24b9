//! The lab's Kubernetes API server: the API server fixture (`apiserver-fixture`) running in
//! a pod of its own, seeded with the Gateway API CRDs and the lab's objects, which the
//! native gateway pod watches with `--provider kubernetes`; a kubeconfig for the pods
//! (the fixture's bridge address) and one for the host, whose loopback port the lab
//! forwards into the API server pod (the host has no interface on the lab's bridge, so
//! this plays the part of `kubectl port-forward`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::{Lab, Pod, Spec, netns, strings};
use crate::tools::{tool_or_system, workspace_bin, workspace_root};

/// The port the lab's API server listens on in its pod.
pub const APISERVER_PORT: u16 = 6443;
/// The Gateway the native gateway pod serves (`--gateway`): the name and namespace the
/// chart gives it, so `manifests/samples/gateway-httproute.yaml` applies to the lab.
pub const GATEWAY_REF: &str = "gateway-system/gateway-proxy";

/// GatewayClass is cluster-scoped and not among the fixture's Gateway API CRDs.
const GATEWAY_CLASS_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gatewayclasses.gateway.networking.k8s.io}
spec:
  group: gateway.networking.k8s.io
  names: {kind: GatewayClass, listKind: GatewayClassList, plural: gatewayclasses, singular: gatewayclass}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// The GatewayClass whose controller the gateway is, and the namespaces the lab's
/// objects live in besides those every cluster has.
const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
    metadata: {name: meshgate}\nspec: {controllerName: meshgate.io/gateway-controller}\n\
    ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-system}\n\
    ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: istio-system}\n";

/// Where the API server's files live and how to reach it.
#[derive(Debug, Clone)]
pub struct KubeFiles {
    /// Seed files, in order (CRDs first); a restart seeds from them again.
    pub seeds: Vec<PathBuf>,
    /// Kubeconfig for processes in the lab's pods (the fixture's bridge address).
    pub pod_kubeconfig: PathBuf,
    /// Kubeconfig for the host (the forwarded loopback port).
    pub host_kubeconfig: PathBuf,
}

impl KubeFiles {
    /// Writes the seeds (CRDs; GatewayClass and `objects`) and both kubeconfigs into
    /// `pod.dir`; `host` is the forwarded loopback address.
    pub fn write(pod: &Pod, objects: &str, host: SocketAddr) -> anyhow::Result<KubeFiles> {
        let mut crds = String::new();
        for name in ["gateway-api", "istio", "gloo"] {
            let src =
                workspace_root().join(format!("e2e/tests/fixtures/apiserver/crds/{name}.yaml"));
            let text = std::fs::read_to_string(&src)
                .with_context(|| format!("reading {}", src.display()))?;
            crds.push_str(&format!("{text}\n---\n"));
        }
        let crd_file = pod.dir.join("crds.yaml");
        std::fs::write(&crd_file, format!("{crds}{GATEWAY_CLASS_CRD}"))?;
        let objects_file = pod.dir.join("objects.yaml");
        std::fs::write(&objects_file, format!("{GATEWAY_CLASS}---\n{objects}"))?;
        let pod_kubeconfig = pod.dir.join("kubeconfig.pods");
        let server = format!("http://{}", pod.at(APISERVER_PORT));
        std::fs::write(&pod_kubeconfig, crate::apiserver::kubeconfig(&server))?;
        let host_kubeconfig = pod.dir.join("kubeconfig");
        std::fs::write(
            &host_kubeconfig,
            crate::apiserver::kubeconfig(&format!("http://{host}")),
        )?;
        Ok(KubeFiles {
            seeds: vec![crd_file, objects_file],
            pod_kubeconfig,
            host_kubeconfig,
        })
    }
}

/// The fixture's command line: listen on the pod's bridge address, seed, start in
/// resourceVersion `epoch`.
pub(super) fn fixture_spec(pod: &Pod, seeds: &[PathBuf], epoch: u32) -> Spec {
    let mut args = strings(&[
        "--address",
        "0.0.0.0",
        "--port",
        &APISERVER_PORT.to_string(),
        "--epoch",
        &epoch.to_string(),
        "--kubeconfig",
        &pod.dir.join("kubeconfig.fixture").display().to_string(),
    ]);
    for seed in seeds {
        args.extend(["--seed".to_string(), seed.display().to_string()]);
    }
    Spec {
        program: workspace_bin("apiserver-fixture"),
        args,
        env: vec![("RUST_LOG".into(), "info".into())],
        proxy_group: false,
    }
}

/// Accepts on a host loopback port and connects each connection to `target` from inside
/// network namespace `ns`. Stops when the returned task is aborted.
pub fn forward_into(
    ns: &str,
    target: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let ns = ns.to_string();
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let ns = ns.clone();
            tokio::spawn(async move {
                // The socket is made on a thread inside the namespace and keeps it.
                let connect = tokio::task::spawn_blocking(move || {
                    netns::in_netns(&ns, move || {
                        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    })
                })
                .await;
                let Ok(Ok(Ok(outbound))) = connect else {
                    return; // the API server is down: the client sees the connection close
                };
                if outbound.set_nonblocking(true).is_err() {
                    return;
                }
                if let Ok(mut outbound) = tokio::net::TcpStream::from_std(outbound) {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((local, task))
}

/// What `kubectl` printed.
#[derive(Debug)]
pub struct KubectlOutput {
    /// Whether it exited 0.
    pub ok: bool,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Lab {
    /// Runs the real kubectl on the host against the lab's API server, with `stdin`.
    pub async fn kubectl(&self, args: &[&str], stdin: &str) -> anyhow::Result<KubectlOutput> {
        use tokio::io::AsyncWriteExt;
        let home = self.apiserver.dir.join("home");
        std::fs::create_dir_all(&home)?;
        let mut child = tokio::process::Command::new(tool_or_system("kubectl"))
            .args(args)
            .arg(format!("--cache-dir={}", home.join("cache").display()))
            .arg("--request-timeout=10s")
            .env("KUBECONFIG", &self.kube.host_kubeconfig)
            .env("HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running kubectl: scripts/install-tools installs it")?;
        let mut input = child.stdin.take().context("kubectl stdin")?;
        input.write_all(stdin.as_bytes()).await?;
        drop(input);
        let out = child.wait_with_output().await?;
        Ok(KubectlOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let out = self.kubectl(args, stdin).await?;
        if !out.ok {
            bail!("kubectl {}: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }

    /// Kills the API server fixture (SIGKILL: no goodbye to its watchers).
    pub fn kill_apiserver(&mut self) -> anyhow::Result<()> {
        let pod = self.apiserver.clone();
        let p = self.proc_mut(&pod, "apiserver")?;
        p.guard.kill();
        Ok(())
    }

    /// Starts the API server fixture again from the seed files plus `extra` (objects
    /// written while it was down), in a new resourceVersion epoch (so watchers relist, as
    /// after an etcd restore); returns once it answers.
    pub async fn restart_apiserver(&mut self, extra: Option<&Path>) -> anyhow::Result<()> {
        self.apiserver_epoch += 1;
        let mut seeds = self.kube.seeds.clone();
        seeds.extend(extra.map(Path::to_path_buf));
        let pod = self.apiserver.clone();
        let spec = fixture_spec(&pod, &seeds, self.apiserver_epoch);
        let p = self.proc_mut(&pod, "apiserver")?;
        p.guard = super::launch(&pod, "apiserver", &spec);
        p.spec = spec;
        self.wait_apiserver().await
    }

    /// Waits until the API server answers `/version` inside its pod.
    pub(super) async fn wait_apiserver(&mut self) -> anyhow::Result<()> {
        let pod = self.apiserver.clone();
        let url = format!("http://{}/version", pod.at(APISERVER_PORT));
        self.wait_ok(&pod, "apiserver", &url).await
    }
}

/// A guard that stops the host forwarder when dropped.
pub(super) struct Forwarder(pub tokio::task::JoinHandle<()>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}
