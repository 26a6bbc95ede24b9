//! The local mesh lab: a miniature cluster made of network namespaces on one machine.
//!
//! ```text
//!                         meshlab-net (bridge br0, 10.77.0.0/24)
//!   ┌──────────────┬──────────────────┬─────────────────────────┬────────────────┬───────────┐
//!   istiod .2      gateway .10        gateway-sidecar .11        httpbin .20     client .100
//!   test CA :15012 gateway-init       gateway-init (sidecar)     httpbin-v2 .21  curl, wrk
//!                  (native)           gateway 8080-9443 (plain)  gateway-init (sidecar,
//!                  sds-agent          istio-proxy Envoy 15001/   inbound -> Envoy 15006)
//!                  gateway 8080-9443  15006 + its sds-agent      Envoy + sds-agent, httpbin
//!                  (mTLS itself)                                 on 127.0.0.1:8000
//!
//!   webapp .22 / reviews .23: httpbin behind a STRICT sidecar (the Istio walkthrough's
//!   webapp, Bookinfo's reviews); tcp-echo .30, outside the mesh: socat echo, openssl
//!   s_server (SNI passthrough upstream); gateway-2 .12: a second replica, on demand.
//! ```
//!
//! The API server fixture runs in its own pod, `apiserver` (.3, port 6443), seeded with the
//! Gateway API and Istio CRDs and the lab's objects; the native gateway watches it
//! (`--provider kubernetes`), the sidecar gateway reads the same objects from a file, and
//! the host reaches it through a forwarded loopback port ([`kube`]).
//!
//! The observability peers ([`telemetry`]): rotel (OTLP collector) in the `istiod` pod,
//! Prometheus scraping the native gateway from inside the gateway pod.
//!
//! Every process runs under `ip netns exec` in its pod's namespace; the istio-proxy
//! processes (Envoy and the sds-agent beside it) run with group 1337, which gateway-init
//! exempts from capture exactly as istio-iptables does. Dropping the [`Lab`] kills every
//! process and deletes every namespace (their interfaces and iptables rules go with them).

pub mod config;
pub mod kube;
pub mod netns;
pub mod proxy;
pub mod scenarios;
pub mod telemetry;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mesh::Identity;

use crate::ca::{ISTIOD_HOST, TestCa};
use crate::curl::CurlResult;
use crate::process::ChildGuard;
use crate::sidecar::{InboundPolicy, PROXY_ADMIN_PORT, traced_capture_bootstrap_yaml};
use crate::tools::{tool, workspace_bin};

use config::EdgeCerts;

/// The port httpbin's Service (and its sidecar's captured app port) uses.
pub const HTTPBIN_PORT: u16 = 8000;
/// The gateway's plain HTTP edge port.
pub const HTTP_PORT: u16 = 8080;
/// The gateway's HTTPS edge port.
pub const HTTPS_PORT: u16 = 8443;
/// The gateway's HTTPS edge port that requires client certificates (MUTUAL).
pub const MTLS_PORT: u16 = 9443;
/// The gateway pod's edge ports, excluded from inbound capture.
pub const EDGE_PORTS: &str = "8080,8443,9443";
/// The Istio proxy group gateway-init exempts from capture.
const PROXY_GID: u32 = mesh::consts::PROXY_UID;
/// The sds-agent's readiness URL inside its pod.
fn agent_ready() -> String {
    format!("http://{}/ready", mesh::consts::SDS_AGENT_ADMIN_ADDR)
}

/// A gateway admin URL inside its pod.
pub fn gateway_admin(path: &str) -> String {
    format!("http://{}{path}", mesh::consts::GATEWAY_ADMIN_ADDR)
}

/// How long any one part may take to come up.
const STARTUP: Duration = Duration::from_secs(60);

/// One "pod": a network namespace with an address on the bridge.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Short name (`gateway`, `httpbin`, ...).
    pub name: &'static str,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
    /// The workload identity its sds-agent asks the CA for.
    pub identity: Identity,
    /// Its working directory (config, token, root, sockets, logs).
    pub dir: PathBuf,
    /// The veth end on the bridge (at most 15 characters).
    pub veth: &'static str,
}

impl Pod {
    /// A pod named `name` at `10.77.0.<last_octet>` running as `namespace/service_account`,
    /// with its directory under `root`; `veth` names its end on the bridge.
    pub fn new(
        root: &Path,
        name: &'static str,
        veth: &'static str,
        last_octet: u8,
        namespace: &str,
        service_account: &str,
    ) -> Pod {
        Pod {
            name,
            ns: format!("{}{name}", netns::PREFIX),
            addr: Ipv4Addr::new(10, 77, 0, last_octet),
            identity: Identity::new("cluster.local", namespace, service_account)
                .expect("lab identity"),
            dir: root.join(name),
            veth,
        }
    }

    /// The Kubernetes Service fronting this pod (named after it).
    pub fn service(&self) -> &'static str {
        self.name
    }

    /// `ip netns exec <ns>` ready for a program and its arguments.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// `host:port` on this pod's bridge address.
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.addr, port))
    }
}

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Working directory (made if missing): per-pod config, sockets and logs.
    pub dir: PathBuf,
    /// Workload certificate lifetime for every sds-agent (`SECRET_TTL`).
    pub secret_ttl: String,
}

/// What a process was started with, so it can be restarted the same way.
#[derive(Debug, Clone)]
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Run with group 1337 (the istio-proxy's group).
    proxy_group: bool,
}

/// A running lab process.
struct Proc {
    pod: String,
    name: String,
    spec: Spec,
    guard: ChildGuard,
}

/// The namespaces, deleted (with anything still inside) when dropped.
struct Network;

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = netns::remove_all() {
            eprintln!("meshlab: teardown: {e:#}");
        }
        netns::release();
    }
}

/// A running lab. Drop it (or call [`Lab::teardown`]) to remove everything.
pub struct Lab {
    // Field order is drop order: processes first, then the namespaces.
    procs: Vec<Proc>,
    /// The test CA (istiod's CA protocol), listening in the `istiod` namespace.
    pub ca: TestCa,
    /// Edge certificates (openssl).
    pub certs: EdgeCerts,
    /// Holds the CA.
    pub istiod: Pod,
    /// Native gateway pod: the gateway does mTLS itself with its sds-agent's certificate.
    pub gateway: Pod,
    /// Sidecar gateway pod: plaintext gateway, captured by an istio-proxy Envoy.
    pub gateway_sidecar: Pod,
    /// httpbin behind an Istio-shaped STRICT sidecar.
    pub httpbin: Pod,
    /// A second httpbin deployment (the canary).
    pub httpbin_v2: Pod,
    /// curl and wrk.
    pub client: Pod,
    /// The Kubernetes API server fixture.
    pub apiserver: Pod,
    /// The Istio walkthrough's `webapp` (httpbin behind a STRICT sidecar, `istioinaction`).
    pub webapp: Pod,
    /// Bookinfo's `reviews` service account (httpbin behind a STRICT sidecar).
    pub reviews: Pod,
    /// Outside the mesh: socat's TCP echo and openssl's TLS server (SNI passthrough).
    pub echo: Pod,
    /// Its seeds and kubeconfigs.
    pub kube: kube::KubeFiles,
    /// The API server's resourceVersion epoch (one more at each restart).
    apiserver_epoch: u32,
    forwarder: Option<kube::Forwarder>,
    options: LabOptions,
    network: Option<Network>,
}

impl Lab {
    /// Builds the namespaces, starts every process and waits until traffic flows through
    /// both gateways. Leftovers of an earlier lab are removed first.
    pub async fn start(options: LabOptions) -> anyhow::Result<Lab> {
        check_prerequisites()?;
        netns::claim()?;
        let network = Network;
        netns::remove_all().context("removing what an earlier lab left")?;
        let dir = options.dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let istiod = Pod::new(&dir, "istiod", "veth-istiod", 2, "istio-system", "istiod");
        let gateway = Pod::new(
            &dir,
            "gateway",
            "veth-gw",
            10,
            "gateway-system",
            "gateway-proxy",
        );
        let gateway_sidecar = Pod::new(
            &dir,
            "gateway-sidecar",
            "veth-gws",
            11,
            "gateway-system",
            "gateway-sidecar",
        );
        let httpbin = Pod::new(&dir, "httpbin", "veth-hb1", 20, "default", "httpbin");
        let httpbin_v2 = Pod::new(&dir, "httpbin-v2", "veth-hb2", 21, "default", "httpbin-v2");
        let client = Pod::new(&dir, "client", "veth-client", 100, "default", "client");
        let webapp = Pod::new(&dir, "webapp", "veth-webapp", 22, "istioinaction", "webapp");
        let reviews = Pod::new(&dir, "reviews", "veth-reviews", 23, "default", "reviews");
        let echo = Pod::new(
            &dir,
            "tcp-echo",
            "veth-echo",
            30,
            "istioinaction",
            "tcp-echo",
        );
        let apiserver = Pod::new(
            &dir,
            "apiserver",
            "veth-api",
            3,
            "kube-system",
            "kube-apiserver",
        );

        netns::create_network()?;
        for pod in [
            &istiod,
            &gateway,
            &gateway_sidecar,
            &httpbin,
            &httpbin_v2,
            &client,
            &apiserver,
            &webapp,
            &reviews,
            &echo,
        ] {
            std::fs::create_dir_all(&pod.dir)?;
            netns::add_pod(&pod.ns, pod.veth, pod.addr)
                .with_context(|| format!("creating pod namespace {}", pod.ns))?;
        }
        let ca_addr = istiod.at(mesh::consts::CA_PORT);
        let listener = netns::in_netns(&istiod.ns, move || std::net::TcpListener::bind(ca_addr))?
            .with_context(|| format!("binding the test CA on {ca_addr}"))?;
        let ca = TestCa::start_on(listener).await;
        let certs = EdgeCerts::make(&dir.join("edge-certs"))?;
        let (host_addr, forward) =
            kube::forward_into(&apiserver.ns, apiserver.at(kube::APISERVER_PORT))?;
        let objects = config::gateway_resources(&certs, &httpbin, &httpbin_v2)?;
        let extras = config::kube_extras(&webapp, &echo, &reviews);
        let kube =
            kube::KubeFiles::write(&apiserver, &format!("{objects}---\n{extras}"), host_addr)?;

        let mut lab = Lab {
            procs: Vec::new(),
            ca,
            certs,
            istiod,
            gateway,
            gateway_sidecar,
            httpbin,
            httpbin_v2,
            client,
            apiserver,
            webapp,
            reviews,
            echo,
            kube,
            apiserver_epoch: 0,
            forwarder: Some(kube::Forwarder(forward)),
            options,
            network: Some(network),
        };
        lab.start_pods().await?;
        Ok(lab)
    }

    async fn start_pods(&mut self) -> anyhow::Result<()> {
        let api = self.apiserver.clone();
        let spec = kube::fixture_spec(&api, &self.kube.seeds, 0);
        self.spawn(&api, "apiserver", spec);
        self.wait_apiserver().await?;
        self.start_telemetry().await?;

        // httpbin pods: capture inbound to the sidecar; no edge ports in an app pod.
        for (pod, port) in self.app_pods() {
            self.gateway_init(&pod, &["--mode", "sidecar", "--edge-ports="])?;
            self.write_credentials(&pod)?;
            let app = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            self.spawn(
                &pod,
                "httpbin",
                Spec {
                    program: tool("gunicorn"),
                    args: strings(&[
                        "-b",
                        &app.to_string(),
                        "-w",
                        "2",
                        "--access-logfile",
                        "-",
                        "httpbin:app",
                    ]),
                    env: Vec::new(),
                    proxy_group: false,
                },
            );
            self.spawn_agent(&pod, true, &self.options.secret_ttl.clone());
            let bootstrap = traced_capture_bootstrap_yaml(
                &pod.identity,
                InboundPolicy::Strict,
                app,
                &pod.dir.join("sds.sock"),
                &self.sidecar_tracing(&pod),
            );
            self.spawn_envoy(&pod, &bootstrap)?;
        }
        self.spawn_echo()?;

        // Native gateway pod: nothing captured; the gateway does Istio mTLS itself.
        let gw = self.gateway.clone();
        self.gateway_init(&gw, &["--mode", "native", "--edge-ports", EDGE_PORTS])?;
        self.write_credentials(&gw)?;
        self.spawn_agent(&gw, false, &self.options.secret_ttl.clone());
        self.spawn_gateway(&gw, "auto", Provider::Kubernetes)?;

        // Sidecar gateway pod: gateway sends plaintext; the istio-proxy does mTLS.
        let gws = self.gateway_sidecar.clone();
        self.gateway_init(&gws, &["--mode", "sidecar", "--edge-ports", EDGE_PORTS])?;
        self.write_credentials(&gws)?;
        self.spawn_agent(&gws, true, &self.options.secret_ttl.clone());
        let upstream_ids = [
            self.httpbin.identity.clone(),
            self.httpbin_v2.identity.clone(),
        ];
        let bootstrap = proxy::gateway_proxy_bootstrap(
            &gws.identity,
            &format!("{}.default.svc.cluster.local", self.httpbin.service()),
            HTTPBIN_PORT,
            &upstream_ids,
            &gws.dir.join("sds.sock"),
        );
        self.spawn_envoy(&gws, &bootstrap)?;
        self.spawn_gateway(&gws, "disable", Provider::File)?;

        // Ready: every admin endpoint answers, then a request crosses each gateway.
        for (pod, port) in self.app_pods() {
            self.wait_ok(
                &pod,
                "httpbin",
                &format!("http://127.0.0.1:{port}/status/200"),
            )
            .await?;
            self.wait_ok(&pod, "sds-agent", &agent_ready()).await?;
            self.wait_ok(
                &pod,
                "envoy",
                &format!("http://127.0.0.1:{PROXY_ADMIN_PORT}/ready"),
            )
            .await?;
        }
        for pod in [self.gateway.clone(), self.gateway_sidecar.clone()] {
            self.wait_ok(&pod, "sds-agent", &agent_ready()).await?;
            self.wait_ok(&pod, "gateway", &gateway_admin("/ready"))
                .await?;
        }
        self.wait_ok(
            &self.gateway_sidecar.clone(),
            "envoy",
            &format!("http://127.0.0.1:{PROXY_ADMIN_PORT}/ready"),
        )
        .await?;
        for pod in [self.gateway.clone(), self.gateway_sidecar.clone()] {
            let url = format!("http://{}/status/200", pod.at(HTTP_PORT));
            let client = self.client.clone();
            let deadline = Instant::now() + STARTUP;
            loop {
                let r = self
                    .curl(
                        &client,
                        &["-H", &format!("Host: {}", config::hosts::HTTPBIN), &url],
                    )
                    .await?;
                if r.status == Some(200) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "no 200 through the {} pod's gateway after {STARTUP:?}; last: {r}\n{}",
                        pod.name,
                        self.logs(&pod)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The pods running httpbin behind a STRICT sidecar, with httpbin's port.
    fn app_pods(&self) -> [(Pod, u16); 4] {
        [
            (self.httpbin.clone(), HTTPBIN_PORT),
            (self.httpbin_v2.clone(), HTTPBIN_PORT),
            (self.webapp.clone(), config::WEBAPP_PORT),
            (self.reviews.clone(), config::REVIEWS_PORT),
        ]
    }

    /// The echo pod, outside the mesh: socat echoes TCP (the walkthrough's tcp-echo) and
    /// openssl serves TLS with its own certificate (the SNI passthrough upstream).
    fn spawn_echo(&mut self) -> anyhow::Result<()> {
        let pod = self.echo.clone();
        let listen = format!("TCP-LISTEN:{},fork,reuseaddr", config::TCP_ECHO_PORT);
        let socat = Spec {
            program: crate::tools::tool_or_system("socat"),
            args: strings(&[&listen, "EXEC:cat"]),
            env: Vec::new(),
            proxy_group: false,
        };
        self.spawn(&pod, "socat", socat);
        let (cert, key) = (
            self.certs.sni_upstream_cert.display().to_string(),
            self.certs.sni_upstream_key.display().to_string(),
        );
        let port = config::SNI_UPSTREAM_PORT.to_string();
        let s_server = Spec {
            program: "openssl".into(),
            args: strings(&[
                "s_server", "-accept", &port, "-cert", &cert, "-key", &key, "-www",
            ]),
            env: Vec::new(),
            proxy_group: false,
        };
        self.spawn(&pod, "s_server", s_server);
        Ok(())
    }

    /// Runs gateway-init in `pod` with `args` (it exits once the rules are applied).
    fn gateway_init(&self, pod: &Pod, args: &[&str]) -> anyhow::Result<()> {
        let out = pod
            .command(workspace_bin("gateway-init"))
            .args(args)
            .output()
            .context("running gateway-init")?;
        std::fs::write(
            pod.dir.join("gateway-init.log"),
            [&out.stdout[..], &out.stderr[..]].concat(),
        )?;
        netns::check(
            &out,
            &format!("gateway-init {} (in {})", args.join(" "), pod.ns),
        )
        .map(|_| ())
    }

    /// The mesh root and a token the CA maps to the pod's identity (the projected
    /// service-account token in a real pod).
    fn write_credentials(&self, pod: &Pod) -> anyhow::Result<()> {
        std::fs::write(pod.dir.join("root-cert.pem"), self.ca.root_pem())?;
        std::fs::write(
            pod.dir.join("istio-token"),
            self.ca.issue_token(&pod.identity),
        )?;
        Ok(())
    }

    fn agent_spec(&self, pod: &Pod, proxy_group: bool, secret_ttl: &str) -> Spec {
        let id = &pod.identity;
        let dir = |f: &str| pod.dir.join(f).display().to_string();
        Spec {
            program: workspace_bin("sds-agent"),
            args: vec![
                "--root-cert".into(),
                dir("root-cert.pem"),
                "--token-file".into(),
                dir("istio-token"),
                "--sds-socket".into(),
                dir("sds.sock"),
                "--log-format".into(),
                "text".into(),
            ],
            env: vec![
                (
                    "CA_ADDR".into(),
                    self.istiod.at(mesh::consts::CA_PORT).to_string(),
                ),
                ("CA_TLS_SERVER_NAME".into(), ISTIOD_HOST.into()),
                ("TRUST_DOMAIN".into(), id.trust_domain().into()),
                ("POD_NAMESPACE".into(), id.namespace().into()),
                ("SERVICE_ACCOUNT".into(), id.service_account().into()),
                ("SECRET_TTL".into(), secret_ttl.into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            proxy_group,
        }
    }

    fn spawn_agent(&mut self, pod: &Pod, proxy_group: bool, secret_ttl: &str) {
        let spec = self.agent_spec(pod, proxy_group, secret_ttl);
        self.spawn(pod, "sds-agent", spec);
    }

    fn spawn_envoy(&mut self, pod: &Pod, bootstrap: &str) -> anyhow::Result<()> {
        let cfg = pod.dir.join("envoy.yaml");
        std::fs::write(&cfg, bootstrap)?;
        let args = vec![
            "-c".into(),
            cfg.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--use-dynamic-base-id".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        let spec = Spec {
            program: tool("envoy"),
            args,
            env: Vec::new(),
            proxy_group: true,
        };
        self.spawn(pod, "envoy", spec);
        Ok(())
    }

    fn spawn_gateway(
        &mut self,
        pod: &Pod,
        upstream_tls: &str,
        provider: Provider,
    ) -> anyhow::Result<()> {
        let mut args = match provider {
            Provider::File => {
                let cfg = pod.dir.join("gateway.yaml");
                let objects =
                    config::gateway_resources(&self.certs, &self.httpbin, &self.httpbin_v2)?;
                let extras = config::sidecar_extras(self.client.addr);
                std::fs::write(&cfg, format!("{objects}---\n{extras}"))?;
                strings(&[
                    "--config",
                    &cfg.display().to_string(),
                    "--pod-labels",
                    config::GATEWAY_POD_LABELS,
                ])
            }
            Provider::Kubernetes => strings(&[
                "--provider",
                "kubernetes",
                "--gateway",
                kube::GATEWAY_REF,
                "--kubeconfig",
                &self.kube.pod_kubeconfig.display().to_string(),
                "--pod-name",
                pod.name,
                "--debounce",
                "50ms",
                // What the downward API gives the chart's pod: the labels Istio Gateways
                // select and the namespace credentialName Secrets are read from.
                "--pod-labels",
                config::NATIVE_POD_LABELS,
                "--pod-namespace",
                pod.identity.namespace(),
            ]),
        };
        args.extend(strings(&["--upstream-tls", upstream_tls]));
        args.extend(strings(&["--workers", "2", "--log-format", "text"]));
        if upstream_tls != "disable" {
            args.extend(strings(&[
                "--sds-socket",
                &pod.dir.join("sds.sock").display().to_string(),
            ]));
        }
        let mut env = vec![("RUST_LOG".into(), "info".into())];
        if let Provider::Kubernetes = provider {
            env.extend(self.native_gateway_env(pod));
        }
        let spec = Spec {
            program: workspace_bin("gateway"),
            args,
            env,
            proxy_group: false,
        };
        self.spawn(pod, "gateway", spec);
        Ok(())
    }

    fn spawn(&mut self, pod: &Pod, name: &str, spec: Spec) {
        let guard = launch(pod, name, &spec);
        self.procs.push(Proc {
            pod: pod.name.to_string(),
            name: name.to_string(),
            spec,
            guard,
        });
    }

    fn proc_mut(&mut self, pod: &Pod, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.pod == pod.name && p.name == name)
            .with_context(|| format!("no {name} in the {} pod", pod.name))
    }

    /// Stops `pod`'s sds-agent with SIGTERM (as the kubelet does) and starts a new one,
    /// with `secret_ttl` if given; returns once the new one is ready.
    pub async fn restart_agent(
        &mut self,
        pod: &Pod,
        secret_ttl: Option<&str>,
    ) -> anyhow::Result<()> {
        let (proxy_group, ttl) = {
            let p = self.proc_mut(pod, "sds-agent")?;
            let ttl = p
                .spec
                .env
                .iter()
                .find(|(k, _)| k == "SECRET_TTL")
                .map(|(_, v)| v.clone());
            (p.spec.proxy_group, ttl.unwrap_or_default())
        };
        let spec = self.agent_spec(pod, proxy_group, secret_ttl.unwrap_or(&ttl));
        let p = self.proc_mut(pod, "sds-agent")?;
        if p.guard.terminate(Duration::from_secs(10)).is_none() {
            p.guard.kill();
        }
        p.guard = launch(pod, "sds-agent", &spec);
        p.spec = spec;
        self.wait_ok(pod, "sds-agent", &agent_ready()).await
    }

    /// What process `name` in `pod` has written so far (its whole log).
    pub fn output(&self, pod: &Pod, name: &str) -> anyhow::Result<String> {
        self.procs
            .iter()
            .find(|p| p.pod == pod.name && p.name == name)
            .map(|p| p.guard.output())
            .with_context(|| format!("no {name} in the {} pod", pod.name))
    }

    /// Kills process `name` in `pod` with SIGKILL (a crashed pod: nothing is released).
    pub fn kill(&mut self, pod: &Pod, name: &str) -> anyhow::Result<()> {
        self.proc_mut(pod, name)?.guard.kill();
        Ok(())
    }

    /// Stops process `name` in `pod` with SIGTERM (as the kubelet does), waiting for it.
    pub fn terminate(&mut self, pod: &Pod, name: &str) -> anyhow::Result<()> {
        let p = self.proc_mut(pod, name)?;
        if p.guard.terminate(Duration::from_secs(30)).is_none() {
            p.guard.kill();
            bail!("{name} in the {} pod ignored SIGTERM for 30 s", pod.name);
        }
        Ok(())
    }

    /// Starts process `name` in `pod` again as it was first started (after [`Lab::kill`]
    /// or [`Lab::terminate`]).
    pub fn relaunch(&mut self, pod: &Pod, name: &str) -> anyhow::Result<()> {
        let p = self.proc_mut(pod, name)?;
        p.guard = launch(pod, name, &p.spec);
        Ok(())
    }

    /// A second native gateway replica in a new pod (`name` at `10.77.0.<last_octet>`,
    /// the same service account), watching the same Gateway; returns once it is ready.
    pub async fn add_gateway_replica(
        &mut self,
        name: &'static str,
        veth: &'static str,
        last_octet: u8,
    ) -> anyhow::Result<Pod> {
        let (ns, sa) = (
            self.gateway.identity.namespace(),
            self.gateway.identity.service_account(),
        );
        let pod = Pod::new(&self.options.dir, name, veth, last_octet, ns, sa);
        std::fs::create_dir_all(&pod.dir)?;
        netns::add_pod(&pod.ns, pod.veth, pod.addr)
            .with_context(|| format!("creating pod namespace {}", pod.ns))?;
        self.gateway_init(&pod, &["--mode", "native", "--edge-ports", EDGE_PORTS])?;
        self.write_credentials(&pod)?;
        self.spawn_agent(&pod, false, &self.options.secret_ttl.clone());
        self.spawn_gateway(&pod, "auto", Provider::Kubernetes)?;
        self.wait_ok(&pod, "sds-agent", &agent_ready()).await?;
        self.wait_ok(&pod, "gateway", &gateway_admin("/ready"))
            .await?;
        Ok(pod)
    }

    /// Waits until `url` answers 200 inside `pod` (process `name` must stay up).
    async fn wait_ok(&mut self, pod: &Pod, name: &str, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            let r = self.curl(pod, &[url]).await?;
            if r.status == Some(200) {
                return Ok(());
            }
            let p = self.proc_mut(pod, name)?;
            if !p.guard.is_running() || Instant::now() > deadline {
                bail!(
                    "{name} in the {} pod did not become ready ({url}: {r}); its log:\n{}",
                    pod.name,
                    p.guard.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs curl inside `pod` (`-sS -i`, 10 s limit) with `args`.
    pub async fn curl(&self, pod: &Pod, args: &[&str]) -> anyhow::Result<CurlResult> {
        let out = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &pod.ns,
                "curl",
                "-sS",
                "-i",
                "--max-time",
                "10",
            ])
            .args(args)
            .output()
            .await
            .context("running curl")?;
        Ok(CurlResult::from_output(&out))
    }

    /// GETs an admin URL inside `pod` and returns the body (error unless 200).
    pub async fn admin_get(&self, pod: &Pod, url: &str) -> anyhow::Result<String> {
        let r = self.curl(pod, &[url]).await?;
        if r.status != Some(200) {
            bail!("{url} in the {} pod: {r}", pod.name);
        }
        Ok(r.body)
    }

    /// One Envoy statistic of the istio-proxy in `pod` (`0` when absent).
    pub async fn envoy_stat(&self, pod: &Pod, name: &str) -> anyhow::Result<u64> {
        let url = format!("http://127.0.0.1:{PROXY_ADMIN_PORT}/stats");
        Ok(crate::envoy::stat_value(
            &self.admin_get(pod, &url).await?,
            name,
        ))
    }

    /// The logs of every process in `pod`, for failure messages.
    pub fn logs(&self, pod: &Pod) -> String {
        self.procs
            .iter()
            .filter(|p| p.pod == pod.name)
            .map(|p| {
                format!(
                    "---- {} / {} ----\n{}",
                    pod.name,
                    p.name,
                    tail(&p.guard.output(), 40)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every lab process id (including processes they forked, found by namespace).
    pub fn pids(&self) -> Vec<i32> {
        // A process that was stopped on purpose has no pid (0) any more.
        let mut pids: Vec<i32> = self
            .procs
            .iter()
            .map(|p| p.guard.pid() as i32)
            .filter(|&pid| pid != 0)
            .collect();
        for ns in netns::existing() {
            pids.extend(netns::pids(&ns));
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The lab's options.
    pub fn options(&self) -> &LabOptions {
        &self.options
    }

    /// Stops every process (SIGTERM, then SIGKILL) and deletes the namespaces.
    pub fn teardown(mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            if p.guard.terminate(Duration::from_secs(5)).is_none() {
                p.guard.kill();
            }
        }
        self.procs.clear();
        self.forwarder.take();
        self.network.take();
        // The network's drop removed everything; this checks.
        let left = netns::existing();
        if !left.is_empty() {
            bail!("namespaces left behind: {}", left.join(", "));
        }
        Ok(())
    }
}

/// Where a lab gateway reads its objects from.
#[derive(Debug, Clone, Copy)]
enum Provider {
    /// `--config gateway.yaml`.
    File,
    /// The lab's API server (`--provider kubernetes`).
    Kubernetes,
}

fn launch(pod: &Pod, name: &str, spec: &Spec) -> ChildGuard {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.ns]);
    if spec.proxy_group {
        cmd.args([
            "setpriv",
            &format!("--regid={PROXY_GID}"),
            "--clear-groups",
            "--",
        ]);
    }
    cmd.arg(&spec.program).args(&spec.args);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    ChildGuard::spawn(name, cmd, pod.dir.join(format!("{name}.log")))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Root, and the programs the lab drives, or an error saying what is missing.
pub fn check_prerequisites() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the mesh lab makes network namespaces and iptables rules: run it as root");
    }
    for program in ["ip", "iptables", "curl", "wrk", "openssl", "setpriv"] {
        let found = crate::tools::on_path(program).is_some();
        if !found {
            bail!("{program} is not installed: run scripts/install-tools");
        }
    }
    Ok(())
}
