//! A stand-in for istiod's CA: `istio.v1.auth.IstioCertificateService/CreateCertificate`
//! over TLS, with its own root and a server certificate for `istiod.istio-system.svc`.
//!
//! Like istiod it authenticates the bearer token and takes the identity from the token
//! (a registry here, TokenReview there), refuses a CSR that claims another identity,
//! and issues istiod-shaped certificates: empty subject, one URI SAN, chain
//! `[leaf, root]`, valid from two minutes before issuance ([`ISTIOD_BACKDATE`]) until the
//! lifetime from `validity_duration` (capped at `max_ttl`) has passed. Tests can make
//! it fail, stall, answer for the wrong identity, go away, or rotate its root.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mesh::Identity;
use mesh::ca::{
    IstioCertificateRequest, IstioCertificateResponse, IstioCertificateService,
    IstioCertificateServiceServer,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use tokio::sync::oneshot;

/// istiod's service DNS name, on the CA's server certificate.
pub const ISTIOD_HOST: &str = "istiod.istio-system.svc";
/// Cap on issued lifetimes unless changed.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// A misbehaviour the CA can be told to show.
#[derive(Debug, Clone, Default)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Answer every call with this status.
    Fail(tonic::Code, String),
    /// Never answer.
    Stall,
    /// Issue the certificate for this identity instead of the caller's.
    WrongIdentity(Identity),
}

/// What the CA saw in one call.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// `authorization` header, if any.
    pub authorization: Option<String>,
    /// `clusterid` header, if any.
    pub cluster_id: Option<String>,
    /// All metadata, lower-case names.
    pub headers: HashMap<String, String>,
    /// Requested validity in seconds.
    pub validity_duration: i64,
    /// Serial (lowercase hex) of the certificate issued, if one was.
    pub issued_serial: Option<String>,
    /// When the answer was produced.
    pub at: SystemTime,
}

/// The CA's signing material.
struct Authority {
    root: CertifiedIssuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Authority {
    fn new(generation: u32) -> Authority {
        let mut root_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // istiod's self-signed root has O=<trust domain>.
        dn.push(DnType::OrganizationName, "cluster.local");
        dn.push(
            DnType::CommonName,
            format!("meshgate test CA root {generation}"),
        );
        root_params.distinguished_name = dn;
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        root_params.not_before = now - time::Duration::hours(1);
        root_params.not_after = now + time::Duration::days(3650);
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("root key");
        let root = CertifiedIssuer::self_signed(root_params, root_key).expect("self-sign root");

        let mut server = CertificateParams::new(vec![
            ISTIOD_HOST.to_string(),
            format!("{ISTIOD_HOST}.cluster.local"),
            "istiod".to_string(),
            "localhost".to_string(),
        ])
        .expect("server SANs");
        server
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.not_before = now - time::Duration::hours(1);
        server.not_after = now + time::Duration::days(365);
        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("server key");
        let server_cert = server
            .signed_by(&server_key, &root)
            .expect("sign server cert");
        Authority {
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            root,
        }
    }

    fn root_pem(&self) -> String {
        self.root.pem()
    }
}

struct State {
    authority: Mutex<Authority>,
    generation: Mutex<u32>,
    tokens: Mutex<HashMap<String, Identity>>,
    fault: Mutex<Fault>,
    max_ttl: Mutex<Duration>,
    calls: Mutex<Vec<CallRecord>>,
}

/// A running test CA.
pub struct TestCa {
    state: Arc<State>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A listener made elsewhere (e.g. in another network namespace), used by the first serve.
    preset: Option<std::net::TcpListener>,
}

impl TestCa {
    /// Starts a CA on an ephemeral loopback port.
    pub async fn start() -> TestCa {
        Self::start_inner(None).await
    }

    /// Starts a CA on a listener the caller bound (the mesh lab binds it inside the
    /// `istiod` network namespace). [`TestCa::restart`] then rebinds the same address in
    /// the caller's namespace, so the lab does not restart it.
    pub async fn start_on(listener: std::net::TcpListener) -> TestCa {
        Self::start_inner(Some(listener)).await
    }

    async fn start_inner(preset: Option<std::net::TcpListener>) -> TestCa {
        crate::install_crypto();
        let state = Arc::new(State {
            authority: Mutex::new(Authority::new(1)),
            generation: Mutex::new(1),
            tokens: Mutex::new(HashMap::new()),
            fault: Mutex::new(Fault::None),
            max_ttl: Mutex::new(DEFAULT_MAX_TTL),
            calls: Mutex::new(Vec::new()),
        });
        let mut ca = TestCa {
            state,
            addr: "127.0.0.1:0".parse().expect("addr"),
            stop: None,
            task: None,
            preset,
        };
        ca.serve().await;
        ca
    }

    async fn serve(&mut self) {
        let listener = match self.preset.take() {
            Some(l) => {
                l.set_nonblocking(true).expect("nonblocking CA listener");
                tokio::net::TcpListener::from_std(l).expect("CA listener")
            }
            None => tokio::net::TcpListener::bind(self.addr)
                .await
                .unwrap_or_else(|e| panic!("test CA cannot bind {}: {e}", self.addr)),
        };
        self.addr = listener.local_addr().expect("local addr");
        let (cert, key) = {
            let a = self.state.authority.lock().unwrap();
            (a.server_cert_pem.clone(), a.server_key_pem.clone())
        };
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = IstioCertificateServiceServer::from_arc(self.state.clone());
        // istiod (Go) sets TCP_NODELAY on every connection; without it the response's
        // trailers wait for the client's delayed ACK (about 40 ms on Linux).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        self.task = Some(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("tls config")
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        }));
        self.stop = Some(stop);
    }

    /// host:port to use as `CA_ADDR` (verify with server name [`ISTIOD_HOST`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current root, PEM.
    pub fn root_pem(&self) -> String {
        self.state.authority.lock().unwrap().root_pem()
    }

    /// Registers a token that authenticates as `identity`; returns it.
    pub fn issue_token(&self, identity: &Identity) -> String {
        let token = format!(
            "test-token.{}.{}",
            identity.service_account(),
            fastrand_hex()
        );
        self.state
            .tokens
            .lock()
            .unwrap()
            .insert(token.clone(), identity.clone());
        token
    }

    /// Sets the misbehaviour for later calls.
    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Caps issued lifetimes.
    pub fn set_max_ttl(&self, ttl: Duration) {
        *self.state.max_ttl.lock().unwrap() = ttl;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Goes away: the port refuses connections until [`TestCa::restart`].
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Comes back on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }

    /// Replaces the root and the server certificate (a CA root rotation) and restarts.
    pub async fn rotate_root(&mut self) {
        let generation = {
            let mut g = self.state.generation.lock().unwrap();
            *g += 1;
            *g
        };
        *self.state.authority.lock().unwrap() = Authority::new(generation);
        self.restart().await;
    }

    /// Issues a certificate directly (no RPC), e.g. to seed a files or SPIFFE source.
    /// Returns `(leaf DER, PKCS#8 key DER)`.
    pub fn issue_direct(&self, identity: &Identity, ttl: Duration) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params = leaf_params(identity, ttl);
        let a = self.state.authority.lock().unwrap();
        let cert = params.signed_by(&key, &a.root).expect("sign");
        (cert.der().to_vec(), key.serialize_der())
    }

    /// The current root, DER.
    pub fn root_der(&self) -> Vec<u8> {
        self.state.authority.lock().unwrap().root.der().to_vec()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn fastrand_hex() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// istiod's `ClockSkewGracePeriod`: the workload certificates it signs are valid from two
/// minutes before they are issued (`NotBefore: now.Add(-ClockSkewGracePeriod)`), and so
/// are this CA's. A peer whose clock is a little behind still accepts a certificate just
/// issued: Envoy has refused one issued a few milliseconds earlier as "not yet valid"
/// when its `notBefore` was that second.
pub const ISTIOD_BACKDATE: time::Duration = time::Duration::minutes(2);

fn leaf_params(identity: &Identity, ttl: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        identity.to_string().try_into().expect("URI SAN"),
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - ISTIOD_BACKDATE;
    params.not_after = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::days(1));
    let mut serial = [0u8; 16];
    fastrand::fill(&mut serial);
    // Positive, non-zero leading byte: a canonical 16-byte DER INTEGER.
    serial[0] = (serial[0] & 0x7f) | 0x10;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

#[tonic::async_trait]
impl IstioCertificateService for State {
    /// Records the call, then answers it (see [`State::answer`]).
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        let headers: HashMap<String, String> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                }
                _ => None,
            })
            .collect();
        let mut record = CallRecord {
            authorization: headers.get("authorization").cloned(),
            cluster_id: headers.get("clusterid").cloned(),
            headers: headers.clone(),
            validity_duration: request.get_ref().validity_duration,
            issued_serial: None,
            at: SystemTime::now(),
        };
        let result = self.answer(&headers, request.get_ref()).await;
        if let Ok((_, serial)) = &result {
            record.issued_serial = Some(serial.clone());
        }
        record.at = SystemTime::now();
        self.calls.lock().unwrap().push(record);
        result.map(|(resp, _)| tonic::Response::new(resp))
    }
}

impl State {
    /// Authenticates the caller as istiod does and signs its CSR, unless told to misbehave.
    async fn answer(
        &self,
        headers: &HashMap<String, String>,
        request: &IstioCertificateRequest,
    ) -> Result<(IstioCertificateResponse, String), tonic::Status> {
        let fault = self.fault.lock().unwrap().clone();
        match &fault {
            Fault::Fail(code, msg) => return Err(tonic::Status::new(*code, msg.clone())),
            Fault::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Err(tonic::Status::deadline_exceeded("stalled"));
            }
            _ => {}
        }
        // Authenticate: the identity comes from the token, as istiod's TokenReview does.
        let token = headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                tonic::Status::unauthenticated("request authenticate failure: no bearer token")
            })?;
        let caller = self
            .tokens
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .ok_or_else(|| {
                tonic::Status::unauthenticated("request authenticate failure: invalid token")
            })?;
        let csr = CertificateSigningRequestParams::from_pem(&request.csr)
            .map_err(|e| tonic::Status::invalid_argument(format!("CSR is not valid: {e}")))?;
        for san in &csr.params.subject_alt_names {
            let claimed = match san {
                SanType::URI(u) => u.as_str().to_string(),
                other => format!("{other:?}"),
            };
            if claimed != caller.to_string() {
                return Err(tonic::Status::invalid_argument(format!(
                    "CSR requests identity {claimed} but the caller is {caller}"
                )));
            }
        }
        let max = *self.max_ttl.lock().unwrap();
        let ttl = match request.validity_duration {
            d if d <= 0 => max,
            d => Duration::from_secs(d as u64).min(max),
        };
        let subject = match fault {
            Fault::WrongIdentity(other) => other,
            _ => caller,
        };
        let params = leaf_params(&subject, ttl);
        let serial = params
            .serial_number
            .as_ref()
            .map(|s| hex_lower(s.as_ref()))
            .unwrap_or_default();
        let a = self.authority.lock().unwrap();
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&a.root)
        .map_err(|e| tonic::Status::internal(format!("signing failed: {e}")))?;
        Ok((
            IstioCertificateResponse {
                cert_chain: vec![leaf.pem(), a.root_pem()],
            },
            serial,
        ))
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
