//! `agendactl certs`: a development CA and one certificate per process of
//! the deployment, for `make run` (namespaces) and `make run-local`
//! (loopback) alike.
//!
//! Every leaf names its process in the subject's common name and its role
//! (what agenda-db's permissions are keyed on) in the organizational unit;
//! it carries both the process's address in the two-machine topology and
//! loopback, so one set serves both modes. Leaves serve as server and as
//! client certificates (mutual TLS on every internal link).
//!
//! Running it again keeps the CA (unless `--new-ca`) and issues every leaf
//! anew: that is the rotation, which running processes pick up from the
//! files. Each file is written whole (temp file, rename), so a process
//! that reloads never reads half a certificate.
//!
//! The CA itself rotates in three steps ([`ca_step`]), each picked up by
//! running processes before the next: `add` makes the next CA and has
//! `ca.pem` trust both; `switch` issues every leaf from the next CA;
//! `finish` drops the old CA from `ca.pem`. Nothing restarts and no
//! connection is refused on the way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::{Error, Result};

/// Refuses the command with `message`.
fn refuse<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::Refused(message.into()))
}

/// The start of every CA's common name (a CA made by a rotation adds the
/// time it was made, so two CAs trusted at once never share a subject).
const CA_NAME: &str = "Agenda development CA";

/// What a certificate's holder may do (the subject's OU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An agenda-db node (client port and raft peer traffic).
    Peer,
    /// agenda-gateway.
    Gateway,
    /// agenda-users.
    Users,
    /// agenda-groups.
    Groups,
    /// agenda-supervisor.
    Supervisor,
    /// agenda-vip.
    Vip,
    /// redis-server.
    Redis,
    /// agendactl and people operating the system.
    Operator,
}

impl Role {
    /// The name written in certificates.
    pub fn name(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Gateway => "gateway",
            Role::Users => "users",
            Role::Groups => "groups",
            Role::Supervisor => "supervisor",
            Role::Vip => "vip",
            Role::Redis => "redis",
            Role::Operator => "operator",
        }
    }
}

/// One certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// File stem and common name, e.g. `agenda-db-1`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Addresses it serves on (besides loopback).
    pub ips: Vec<IpAddr>,
}

impl Leaf {
    /// A leaf for loopback only (tests, one-host setups).
    pub fn new(name: &str, role: Role) -> Leaf {
        Leaf {
            name: name.into(),
            role,
            ips: Vec::new(),
        }
    }
}

/// Every process of DESIGN.md's two-machine topology (`deploy/netns.sh`:
/// machine A `.11`, B `.12`, the witness `.13`, the VIP `.10` on
/// `subnet`), plus the operator.
pub fn plan(subnet: Ipv4Addr) -> Vec<Leaf> {
    let host = |last: u8| {
        let [a, b, c, _] = subnet.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, last))
    };
    let (vip, a, b, w) = (host(10), host(11), host(12), host(13));
    let leaf = |name: String, role, ips: Vec<IpAddr>| Leaf { name, role, ips };
    let mut out = Vec::new();
    for (id, ip) in [(1, a), (2, a), (3, b), (4, b), (5, w)] {
        out.push(leaf(format!("agenda-db-{id}"), Role::Peer, vec![ip]));
    }
    for (m, ip) in [("a", a), ("b", b)] {
        out.push(leaf(
            format!("agenda-supervisor-{m}"),
            Role::Supervisor,
            vec![ip],
        ));
        out.push(leaf(format!("redis-{m}"), Role::Redis, vec![ip]));
        out.push(leaf(format!("agenda-users-{m}"), Role::Users, vec![ip]));
        out.push(leaf(format!("agenda-groups-{m}"), Role::Groups, vec![ip]));
        out.push(leaf(
            format!("agenda-gateway-{m}"),
            Role::Gateway,
            vec![ip, vip],
        ));
        out.push(leaf(format!("agenda-vip-{m}"), Role::Vip, vec![ip]));
    }
    out.push(leaf("agendactl".into(), Role::Operator, Vec::new()));
    out
}

/// What [`issue`] wrote.
#[derive(Debug)]
pub struct Issued {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// Whether the CA was made now (else an existing one signed).
    pub new_ca: bool,
    /// Leaf certificates written.
    pub leaves: Vec<PathBuf>,
}

/// Writes `ca.pem`/`ca-key.pem` (kept when present, unless `new_ca`) and
/// `NAME.pem`/`NAME-key.pem` for every leaf of `plan`, valid for `days`.
pub fn issue(dir: &Path, leaves: &[Leaf], days: u32, new_ca: bool) -> Result<Issued> {
    if days == 0 {
        return refuse("--days must be at least 1");
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    if dir.join(NEXT_CA).exists() && !new_ca {
        return refuse(format!(
            "a CA rotation is under way ({} exists): go on with --ca-step switch, then --ca-step finish",
            dir.join(NEXT_CA).display()
        ));
    }
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let made_ca = new_ca || !ca_cert.exists() || !ca_key.exists();
    let issuer = if made_ca {
        let _ = std::fs::remove_file(dir.join(NEXT_CA));
        let _ = std::fs::remove_file(dir.join(NEXT_CA_KEY));
        let (cert, issuer) = new_authority(CA_NAME, days)?;
        write_private(&ca_key, &issuer.key().serialize_pem())?;
        write(&ca_cert, &cert)?;
        issuer
    } else {
        authority(&ca_cert, &ca_key, days)?
    };
    let written = issue_leaves(dir, leaves, days, &issuer)?;
    Ok(Issued {
        ca: ca_cert,
        new_ca: made_ca,
        leaves: written,
    })
}

/// The next CA while one rotates (see [`ca_step`]).
const NEXT_CA: &str = "ca-next.pem";
const NEXT_CA_KEY: &str = "ca-next-key.pem";

/// One step of a CA rotation; give running processes time to read the
/// files (a few seconds) between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaStep {
    /// Make the next CA (`ca-next.pem`) and trust both: `ca.pem` holds the
    /// current and the next CA. Leaves stay as they are.
    Add,
    /// Issue every leaf from the next CA (both still trusted).
    Switch,
    /// Trust the next CA only: it becomes `ca.pem`/`ca-key.pem`.
    Finish,
}

/// Runs one step of a CA rotation in `dir` (the leaves of `switch` are
/// `leaves`, valid for `days`). Returns what it did, for the operator.
pub fn ca_step(dir: &Path, step: CaStep, leaves: &[Leaf], days: u32) -> Result<String> {
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (next_cert, next_key) = (dir.join(NEXT_CA), dir.join(NEXT_CA_KEY));
    if !ca_key.exists() {
        return refuse(format!(
            "no CA in {} yet: run `agendactl certs` first",
            dir.display()
        ));
    }
    let underway = next_cert.exists() && next_key.exists();
    match step {
        CaStep::Add => {
            if underway {
                return refuse("a rotation is under way already: --ca-step switch, then finish");
            }
            let current = authority(&ca_cert, &ca_key, days)?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let (cert, next) = new_authority(&format!("{CA_NAME} {stamp}"), days)?;
            write_private(&next_key, &next.key().serialize_pem())?;
            write(&next_cert, &cert)?;
            let both = format!("{}{}", pem_of(&ca_cert, current.key())?, cert);
            write(&ca_cert, &both)?;
            Ok(format!(
                "next CA in {}; {} trusts both. Once every process has it, --ca-step switch",
                next_cert.display(),
                ca_cert.display()
            ))
        }
        CaStep::Switch => {
            if !underway {
                return refuse("no rotation under way: --ca-step add first");
            }
            let next = authority(&next_cert, &next_key, days)?;
            let n = issue_leaves(dir, leaves, days, &next)?.len();
            Ok(format!(
                "{n} certificates issued by the next CA. Once every process has them, --ca-step finish"
            ))
        }
        CaStep::Finish => {
            if !underway {
                return refuse("no rotation under way: --ca-step add first");
            }
            let next = std::fs::read_to_string(&next_cert)
                .map_err(Error::io(format!("reading {}", next_cert.display())))?;
            let key = std::fs::read_to_string(&next_key)
                .map_err(Error::io(format!("reading {}", next_key.display())))?;
            write_private(&ca_key, &key)?;
            write(&ca_cert, &next)?;
            for done in [&next_cert, &next_key] {
                std::fs::remove_file(done)
                    .map_err(Error::io(format!("removing {}", done.display())))?;
            }
            Ok(format!(
                "{} trusts the new CA only; the rotation is done",
                ca_cert.display()
            ))
        }
    }
}

/// A fresh self-signed CA named `name`: its PEM and what signs with it.
fn new_authority(name: &str, days: u32) -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().map_err(Error::cert("generating the CA key"))?;
    let params = ca_params(name, days.max(3650))?;
    let cert = params
        .self_signed(&key)
        .map_err(Error::cert("signing the CA"))?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// The CA in `cert` (the certificate of the key in `key`, among the
/// certificates there) as something to sign with.
fn authority(cert: &Path, key: &Path, days: u32) -> Result<Issuer<'static, KeyPair>> {
    let pem =
        std::fs::read_to_string(key).map_err(Error::io(format!("reading {}", key.display())))?;
    let key =
        KeyPair::from_pem(&pem).map_err(Error::cert(format!("{} is not a key", key.display())))?;
    let name = subject_of(cert, &key)?;
    Ok(Issuer::new(ca_params(&name, days.max(3650))?, key))
}

/// The common name of the certificate in `path` that holds `key`'s public
/// half (a leaf's issuer name must match its CA's subject exactly).
fn subject_of(path: &Path, key: &KeyPair) -> Result<String> {
    Ok(ca_cert_of(path, key)?.1)
}

/// The PEM of the certificate in `path` that holds `key`'s public half.
fn pem_of(path: &Path, key: &KeyPair) -> Result<String> {
    Ok(ca_cert_of(path, key)?.0)
}

fn ca_cert_of(path: &Path, key: &KeyPair) -> Result<(String, String)> {
    use rcgen::PublicKeyData as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let public = key.der_bytes();
    let unreadable =
        |e: &dyn std::fmt::Display| Error::Malformed(format!("reading {}: {e}", path.display()));
    for der in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let der = der.map_err(|e| unreadable(&e))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| Error::Malformed(format!("{}: {e}", path.display())))?;
        if cert.public_key().subject_public_key.data.as_ref() != public {
            continue;
        }
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or(CA_NAME)
            .to_string();
        return Ok((base64_pem(der.as_ref()), cn));
    }
    Err(Error::Malformed(format!(
        "{} holds no certificate of its CA key",
        path.display()
    )))
}

/// DER as a PEM certificate block.
fn base64_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Issues every leaf of `leaves` with `issuer`; the certificate paths.
fn issue_leaves(
    dir: &Path,
    leaves: &[Leaf],
    days: u32,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for leaf in leaves {
        let key = KeyPair::generate().map_err(Error::cert("generating a key"))?;
        let cert = leaf_params(leaf, days)?
            .signed_by(&key, issuer)
            .map_err(Error::cert(format!("signing {}", leaf.name)))?;
        // Key first: a process reloading between the two writes finds a
        // key that does not match its certificate and keeps the old pair.
        write_private(
            &dir.join(format!("{}-key.pem", leaf.name)),
            &key.serialize_pem(),
        )?;
        let path = dir.join(format!("{}.pem", leaf.name));
        write(&path, &cert.pem())?;
        written.push(path);
    }
    Ok(written)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    // An hour back: clocks of two machines may disagree a little.
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
}

fn ca_params(name: &str, days: u32) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(Error::cert(format!("the CA {name:?}")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Agenda");
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, days);
    Ok(p)
}

fn leaf_params(leaf: &Leaf, days: u32) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(vec![leaf.name.clone(), "localhost".to_string()])
        .map_err(Error::cert(format!("the names of {}", leaf.name)))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Agenda");
    dn.push(DnType::OrganizationalUnitName, leaf.role.name());
    dn.push(DnType::CommonName, leaf.name.as_str());
    p.distinguished_name = dn;
    let loopback = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for ip in leaf.ips.iter().chain(loopback.iter()) {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, days);
    Ok(p)
}

fn write(path: &Path, text: &str) -> Result<()> {
    write_mode(path, text, 0o644)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    write_mode(path, text, 0o600)
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io(format!("writing {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(Error::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("renaming to {}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn roots(dir: &Path) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(roots)
    }

    fn leaf(dir: &Path, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(dir.join(format!("{name}.pem"))).unwrap()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_ok(dir: &Path, name: &str, ip: &str) -> bool {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(dir), provider())
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &leaf(dir, name),
                &[],
                &ServerName::try_from(ip.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    fn client_ok(dir: &Path, name: &str) -> bool {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(dir), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&leaf(dir, name), &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn the_plan_places_every_process_of_the_topology() {
        let plan = plan(Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(plan.len(), 5 + 2 * 6 + 1);
        let gw = plan.iter().find(|l| l.name == "agenda-gateway-b").unwrap();
        assert_eq!(gw.role, Role::Gateway);
        assert!(gw.ips.contains(&"10.77.0.12".parse().unwrap()));
        assert!(gw.ips.contains(&"10.77.0.10".parse().unwrap()), "the VIP");
        let db5 = plan.iter().find(|l| l.name == "agenda-db-5").unwrap();
        assert_eq!(
            (db5.role, db5.ips.clone()),
            (Role::Peer, vec!["10.77.0.13".parse().unwrap()])
        );
    }

    #[test]
    fn leaves_verify_against_the_ca_as_servers_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(Ipv4Addr::new(10, 77, 0, 0));
        let issued = issue(dir.path(), &plan, 30, false).unwrap();
        assert!(issued.new_ca);
        assert_eq!(issued.leaves.len(), plan.len());
        assert!(server_ok(dir.path(), "agenda-gateway-a", "10.77.0.10"));
        assert!(server_ok(dir.path(), "agenda-gateway-a", "127.0.0.1"));
        assert!(server_ok(dir.path(), "agenda-db-3", "10.77.0.12"));
        assert!(
            !server_ok(dir.path(), "agenda-db-3", "10.77.0.11"),
            "not its machine"
        );
        assert!(client_ok(dir.path(), "agendactl"));
        let key = std::fs::metadata(dir.path().join("agenda-db-1-key.pem")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_second_run_keeps_the_ca_and_rotates_the_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(Ipv4Addr::new(10, 77, 0, 0));
        issue(dir.path(), &plan, 30, false).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let before = leaf(dir.path(), "agenda-users-a");
        let again = issue(dir.path(), &plan, 30, false).unwrap();
        assert!(!again.new_ca);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert_ne!(leaf(dir.path(), "agenda-users-a"), before, "a new leaf");
        assert!(server_ok(dir.path(), "agenda-users-a", "10.77.0.11"));
        // A new CA: the old leaves' trust is gone with it.
        let other = tempfile::tempdir().unwrap();
        issue(other.path(), &plan, 30, true).unwrap();
        std::fs::copy(other.path().join("ca.pem"), dir.path().join("ca.pem")).unwrap();
        assert!(!client_ok(dir.path(), "agendactl"));
    }
}
