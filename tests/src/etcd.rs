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
        let bin = etcd_bin()?;
        let dir = tempfile::Builder::new().prefix("etcd-bench").tempdir()?;
        let peers: Vec<(String, u16, u16)> = (1..=n)
            .map(|i| (format!("e{i}"), free_port(), free_port()))
            .collect();
        let initial = peers
            .iter()
            .map(|(name, _, p)| format!("{name}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (name, c, p) in &peers {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = Command::new(&bin)
                .args([
                    "--name",
                    name,
                    "--data-dir",
                    &dir.path().join(name).display().to_string(),
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{c}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{c}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{p}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{p}"),
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
        crate::cluster::channels(&self.clients)
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
