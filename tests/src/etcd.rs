//! A real five-member etcd cluster on loopback (Debian `etcd-server`), the
//! yardstick of `make bench-db`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::Channel;

use crate::cluster::{free_port, wait_for};

/// Generated etcd KV client types (subset).
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

/// Running etcd members; killed on drop.
pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    /// Client URLs (host:port) of every member.
    pub clients: Vec<String>,
    /// How the harness connects (mutual TLS), if the members serve TLS.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// TLS for an [`EtcdCluster`].
pub struct EtcdTls {
    /// Every member's certificate, key and CA.
    pub member: agenda_common::tls::TlsFiles,
    /// The harness's client configuration (a certificate of the same CA).
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

/// Finds the etcd binary (PATH or Debian's location).
pub fn etcd_bin() -> Result<PathBuf> {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    anyhow::bail!("etcd not found; install it with `apt-get install -y etcd-server`")
}

impl EtcdCluster {
    /// Starts `n` members with default (fsync on) settings.
    pub async fn start(n: usize) -> Result<EtcdCluster> {
        EtcdCluster::start_with(n, None).await
    }

    /// [`EtcdCluster::start`], with mutual TLS on the client and peer
    /// ports when `tls` is given: the member certificate `tls.member`
    /// (`DIR/NAME.pem`, `DIR/NAME-key.pem`, `DIR/ca.pem`) and the client
    /// configuration the harness connects with.
    pub async fn start_with(n: usize, tls: Option<EtcdTls>) -> Result<EtcdCluster> {
        let bin = etcd_bin()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let dir = tempfile::Builder::new().prefix("etcd-bench").tempdir()?;
        let peers: Vec<(String, u16, u16)> = (1..=n)
            .map(|i| (format!("e{i}"), free_port(), free_port()))
            .collect();
        let initial = peers
            .iter()
            .map(|(name, _, p)| format!("{name}={scheme}://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (name, c, p) in &peers {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let mut tls_args: Vec<String> = Vec::new();
            if let Some(t) = &tls {
                let (cert, key, ca) = (
                    t.member.cert.display().to_string(),
                    t.member.key.display().to_string(),
                    t.member.ca.display().to_string(),
                );
                for (flag, value) in [
                    ("--cert-file", &cert),
                    ("--key-file", &key),
                    ("--trusted-ca-file", &ca),
                    ("--peer-cert-file", &cert),
                    ("--peer-key-file", &key),
                    ("--peer-trusted-ca-file", &ca),
                ] {
                    tls_args.extend([flag.to_string(), value.clone()]);
                }
                tls_args.extend([
                    "--client-cert-auth".into(),
                    "--peer-client-cert-auth".into(),
                ]);
            }
            let child = Command::new(&bin)
                .args(&tls_args)
                .args([
                    "--name",
                    name,
                    "--data-dir",
                    &dir.path().join(name).display().to_string(),
                    "--listen-client-urls",
                    &format!("{scheme}://127.0.0.1:{c}"),
                    "--advertise-client-urls",
                    &format!("{scheme}://127.0.0.1:{c}"),
                    "--listen-peer-urls",
                    &format!("{scheme}://127.0.0.1:{p}"),
                    "--initial-advertise-peer-urls",
                    &format!("{scheme}://127.0.0.1:{p}"),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    "agenda-bench",
                    "--initial-cluster-state",
                    "new",
                ])
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("spawn etcd")?;
            children.push(child);
        }
        let cluster = EtcdCluster {
            _dir: dir,
            children,
            tls: tls.map(|t| t.client),
            clients: peers
                .iter()
                .map(|(_, c, _)| format!("127.0.0.1:{c}"))
                .collect(),
        };
        let chans = cluster.channels()?;
        wait_for("etcd to accept writes", Duration::from_secs(30), || {
            let mut kv = pb::kv_client::KvClient::new(chans[0].clone());
            async move {
                kv.put(pb::PutRequest {
                    key: b"ready".to_vec(),
                    value: b"1".to_vec(),
                    lease: 0,
                })
                .await
                .ok()
                .map(|_| ())
            }
        })
        .await?;
        Ok(cluster)
    }

    /// One lazily connected channel per member.
    pub fn channels(&self) -> Result<Vec<Channel>> {
        crate::cluster::channels_with(&self.clients, self.tls.as_ref())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
