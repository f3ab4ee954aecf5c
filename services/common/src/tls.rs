//! TLS for every link: one process's identity (its certificate and key,
//! the cluster CA it trusts) and the rustls configurations built from it,
//! mutual on internal links. Certificates come from files
//! (`agendactl certs` makes a development set) and are read again when
//! they change, so leaves rotate without a restart: connections made
//! after the change present the new certificate, open ones go on. The CA
//! file is read again too, and every handshake checks against the CAs it
//! holds then: `ca.pem` may hold two (old and new) while a CA rotates
//! (`agendactl certs --ca-step`).
//!
//! Only the ring provider is used (no aws-lc: its C build is not wanted).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where a process's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA (PEM): the only issuer trusted, as server and client.
    pub ca: PathBuf,
    /// This process's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME-key.pem`, as
    /// `agendactl certs` writes them.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what} {}: {e}", path.display()))
}

fn load_pair(files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_error("reading certificate", &files.cert, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error("reading certificate", &files.cert, e))?;
    if chain.is_empty() {
        return Err(tls_error("no certificate in", &files.cert, "empty"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error("reading key", &files.key, e))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_error("loading key", &files.key, e))?;
    let pair = CertifiedKey::new(chain, key);
    // A rotation writes the key, then the certificate: in between they do
    // not match, and the old pair stays until the next check.
    pair.keys_match()
        .map_err(|e| tls_error("key does not match", &files.cert, e))?;
    Ok(Arc::new(pair))
}

fn load_roots(ca: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| tls_error("reading CA", ca, e))? {
        let c = c.map_err(|e| tls_error("reading CA", ca, e))?;
        roots.add(c).map_err(|e| tls_error("bad CA", ca, e))?;
    }
    if roots.is_empty() {
        return Err(tls_error("no certificate in", ca, "empty"));
    }
    Ok(Arc::new(roots))
}

/// What the files hold now. Compared by content, not by mtime: two writes
/// within one filesystem clock tick (a few ms) share an mtime. The files
/// are small and read once a second.
fn contents(files: &TlsFiles) -> Vec<Option<Vec<u8>>> {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|p| std::fs::read(p).ok())
        .collect()
}

/// The CAs trusted now, as the verifiers every handshake asks.
#[derive(Debug)]
struct Trust {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

impl Trust {
    fn new(roots: Arc<RootCertStore>) -> Result<Trust> {
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| Error::Config(format!("TLS client verifier: {e}")))?;
        let servers = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| Error::Config(format!("TLS server verifier: {e}")))?;
        Ok(Trust { clients, servers })
    }
}

/// A process's certificate and key, and the CAs it trusts, swapped in
/// when the files change.
#[derive(Debug)]
pub struct Identity {
    files: TlsFiles,
    trust: RwLock<Arc<Trust>>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: RwLock<Vec<Option<Vec<u8>>>>,
    /// Contents that last failed to load.
    failed: RwLock<Option<Vec<Option<Vec<u8>>>>>,
}

impl Identity {
    /// Reads the files once (an error names the file and what is wrong).
    pub fn load(files: &TlsFiles) -> Result<Arc<Identity>> {
        let seen = contents(files);
        let pair = load_pair(files)?;
        Ok(Arc::new(Identity {
            trust: RwLock::new(Arc::new(Trust::new(load_roots(&files.ca)?)?)),
            files: files.clone(),
            current: RwLock::new(pair),
            seen: RwLock::new(seen),
            failed: RwLock::new(None),
        }))
    }

    /// Where it is read from (and read again when the files change).
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn trust(&self) -> Arc<Trust> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again if they changed; true when a new pair (or
    /// CA set) is in use. Files that do not load (half rotated, a bad
    /// file) are logged and the old pair and CAs kept.
    pub fn reload(&self) -> bool {
        let now = contents(&self.files);
        if *self.seen.read().unwrap_or_else(|p| p.into_inner()) == now {
            return false;
        }
        let loaded = load_pair(&self.files)
            .and_then(|pair| Ok((pair, Trust::new(load_roots(&self.files.ca)?)?)));
        match loaded {
            Ok((pair, trust)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = pair;
                *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
                *self.seen.write().unwrap_or_else(|p| p.into_inner()) = now;
                tracing::info!(cert = %self.files.cert.display(), ca = %self.files.ca.display(), "TLS files reloaded");
                true
            }
            Err(e) => {
                // Said once per bad state of the files, not every second.
                let mut failed = self.failed.write().unwrap_or_else(|p| p.into_inner());
                if failed.as_ref() != Some(&now) {
                    tracing::warn!(error = %e, "TLS certificate changed but cannot be used yet; keeping the old one");
                    *failed = Some(now);
                }
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until `stop`.
    pub fn spawn_reload(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                this.reload();
            }
        });
    }

    /// A server configuration presenting this identity; with
    /// `client_auth`, a client must present a certificate from the CA.
    pub fn server_config(self: &Arc<Self>, client_auth: bool) -> Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let builder = if client_auth {
            builder.with_client_cert_verifier(Arc::new(LiveTrust(self.clone())))
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration trusting only the CA (as the files say at
    /// each handshake) and presenting this identity when the server asks.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LiveTrust(self.clone())))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        Ok(Arc::new(config))
    }
}

/// The handshake-signature checks of a verifier trait, handed to the
/// current [`Trust`]'s verifier `$which` (the same for both traits).
macro_rules! signatures_by {
    ($which:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.0
                .trust()
                .$which
                .verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.0
                .trust()
                .$which
                .verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.trust().$which.supported_verify_schemes()
        }
    };
}

/// Checks peers against the CAs the identity trusts at that moment (the
/// standard WebPKI checks, rebuilt when `ca.pem` changes).
#[derive(Debug)]
struct LiveTrust(Arc<Identity>);

impl ClientCertVerifier for LiveTrust {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Optional hints; our clients present their one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.0
            .trust()
            .clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    signatures_by!(clients);
}

impl ServerCertVerifier for LiveTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.0.trust().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    signatures_by!(servers);
}

/// A client of the public HTTPS side (people's tools, tests, benchmarks):
/// trusts only the CA in `ca_pem` (a deployment's `.agenda/ca.pem`),
/// presents no certificate, speaks HTTP/1.1.
pub fn public_client_config(ca_pem: &Path) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(load_roots(ca_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The role a certificate's holder has: its subject's organizational unit
/// (`agendactl certs` writes `peer`, `gateway`, `users`, `groups`,
/// `supervisor`, `vip`, `redis` or `operator` there).
pub fn role_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let role = parsed
        .subject()
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(role)
}

/// Refuses a caller whose certificate's role is not one of `allowed`.
/// A caller without certificates came over plaintext (a deployment
/// without TLS): nothing to check.
pub fn require_role(
    certs: Option<&[CertificateDer<'_>]>,
    allowed: &[&str],
    what: &str,
) -> std::result::Result<(), String> {
    let Some(role) = caller_role(certs) else {
        return Ok(());
    };
    match role.as_str() {
        r if allowed.contains(&r) => Ok(()),
        "" => Err(format!("a certificate naming no role may not {what}")),
        r => Err(format!(
            "the {r} role may not {what} (allowed: {})",
            allowed.join(", ")
        )),
    }
}

/// The role of a caller with certificates `certs` (its own first): `None`
/// over plaintext (nothing to check), `""` when its certificate names none.
pub fn caller_role(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    certs.map(|c| c.first().map(cached_role_of).unwrap_or_default())
}

/// Most certificates whose role is remembered (a deployment has a few
/// dozen; rotations add more, so the memory is dropped when full).
const ROLES_KEPT: usize = 1024;

/// [`role_of`], remembered by the certificate's bytes: every request of a
/// TLS caller asks, and parsing X.509 each time was a measurable part of
/// agenda-db's cost per call.
fn cached_role_of(cert: &CertificateDer<'_>) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static ROLES: OnceLock<Mutex<HashMap<Vec<u8>, String>>> = OnceLock::new();
    let roles = ROLES.get_or_init(Mutex::default);
    if let Some(role) = roles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(cert.as_ref())
    {
        return role.clone();
    }
    let role = role_of(cert).unwrap_or_default();
    let mut map = roles.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= ROLES_KEPT {
        map.clear();
    }
    map.insert(cert.as_ref().to_vec(), role.clone());
    role
}

/// Hands rustls whatever pair the identity holds at handshake time.
#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// A CA in `dir` and a way to issue leaves into it (other modules'
    /// tests use it too).
    pub(crate) struct Ca {
        pub(crate) dir: tempfile::TempDir,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        pub(crate) fn new() -> Ca {
            let dir = tempfile::tempdir().unwrap();
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, "test CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = p.self_signed(&key).unwrap();
            std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
            Ca {
                dir,
                issuer: Issuer::new(p, key),
            }
        }

        pub(crate) fn leaf(&self, name: &str) -> TlsFiles {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            let files = TlsFiles::in_dir(self.dir.path(), name);
            std::fs::write(&files.key, key.serialize_pem()).unwrap();
            std::fs::write(&files.cert, cert.pem()).unwrap();
            files
        }
    }

    /// The CA of `dir` as a root store.
    pub(crate) fn roots(dir: &Path) -> Arc<RootCertStore> {
        load_roots(&dir.join("ca.pem")).unwrap()
    }

    /// An echo server with mutual TLS; returns its address.
    async fn echo(identity: Arc<Identity>) -> SocketAddr {
        let acceptor = TlsAcceptor::from(identity.server_config(true).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 5];
                        if tls.read_exact(&mut buf).await.is_ok() {
                            let _ = tls.write_all(&buf).await;
                        }
                    }
                });
            }
        });
        addr
    }

    /// One exchange; the server certificate seen.
    async fn hello(
        config: Arc<ClientConfig>,
        addr: SocketAddr,
    ) -> std::io::Result<CertificateDer<'static>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        tls.write_all(b"hello").await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");
        let (_, conn) = tls.get_ref();
        Ok(conn.peer_certificates().unwrap()[0].clone())
    }

    #[tokio::test]
    async fn mutual_tls_admits_cluster_certificates_only() {
        let ca = Ca::new();
        let server = Identity::load(&ca.leaf("server")).unwrap();
        let client = Identity::load(&ca.leaf("client")).unwrap();
        let addr = echo(server).await;
        hello(client.client_config().unwrap(), addr).await.unwrap();

        // No client certificate: refused.
        let anonymous = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(load_roots(&client.files().ca).unwrap())
            .with_no_client_auth();
        assert!(hello(Arc::new(anonymous), addr).await.is_err());

        // A certificate from another CA: refused, and its holder does
        // not trust our server either.
        let stranger = Ca::new();
        let outsider = Identity::load(&stranger.leaf("client")).unwrap();
        assert!(hello(outsider.client_config().unwrap(), addr)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_rotated_leaf_is_served_without_a_restart() {
        let ca = Ca::new();
        let files = ca.leaf("server");
        let server = Identity::load(&files).unwrap();
        let client = Identity::load(&ca.leaf("client")).unwrap();
        let addr = echo(server.clone()).await;
        let first = hello(client.client_config().unwrap(), addr).await.unwrap();
        assert!(!server.reload(), "nothing changed");

        // Half a rotation (a new key, the old certificate): kept as it was.
        let other = ca.leaf("other");
        std::fs::copy(&other.key, &files.key).unwrap();
        assert!(!server.reload());
        assert_eq!(
            hello(client.client_config().unwrap(), addr).await.unwrap(),
            first
        );

        // The whole rotation.
        ca.leaf("server");
        assert!(server.reload());
        let second = hello(client.client_config().unwrap(), addr).await.unwrap();
        assert_ne!(second, first, "the new certificate is presented");
    }

    #[test]
    fn the_role_is_the_subjects_organizational_unit() {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "gateway");
        p.distinguished_name
            .push(DnType::CommonName, "agenda-gateway-a");
        let cert = p.self_signed(&key).unwrap();
        let der = cert.der().clone();
        assert_eq!(role_of(&der).as_deref(), Some("gateway"));
        let certs = [der];
        assert!(require_role(Some(&certs), &["gateway", "users"], "read").is_ok());
        let refused = require_role(Some(&certs), &["operator"], "add members").unwrap_err();
        assert!(
            refused.contains("gateway") && refused.contains("operator"),
            "{refused}"
        );
        assert!(
            require_role(None, &["operator"], "x").is_ok(),
            "plaintext: no check"
        );
        // No OU: no role, refused.
        let ca = Ca::new();
        let bare = CertificateDer::from_pem_file(ca.leaf("bare").cert).unwrap();
        assert_eq!(role_of(&bare), None);
        assert!(require_role(Some(&[bare]), &["operator"], "x").is_err());
    }

    #[test]
    fn missing_or_broken_files_are_named() {
        let ca = Ca::new();
        let mut files = ca.leaf("x");
        files.key = ca.dir.path().join("nope.pem");
        let err = Identity::load(&files).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        let files = ca.leaf("y");
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let err = Identity::load(&files).unwrap_err().to_string();
        assert!(err.contains("y.pem"), "{err}");
    }
}
