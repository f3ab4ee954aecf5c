//! One Redis node as the supervisor sees it: an application-level health
//! check (`PING`, then `INFO replication` and `INFO server` parsed into an
//! [`Observation`]) and the `REPLICAOF` commands, each under a deadline.
//!
//! The connection is kept between checks and dropped on any error, so a
//! node that died and came back is reached through a fresh connection.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::split_addr;
use crate::error::{Error, Result};

/// What a node reported in one successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Master or replica (of whom, link state).
    pub role: Role,
    /// Replication offset: `master_repl_offset` of a master,
    /// `slave_repl_offset` of a replica (0 when unknown).
    pub offset: u64,
    /// `process_id` of the redis-server (from `INFO server`).
    pub pid: Option<u32>,
}

/// The replication role of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes.
    Master,
    /// Replicates `master` (`host:port` as configured with REPLICAOF).
    Replica {
        /// `master_host:master_port`.
        master: String,
        /// `master_link_status:up`.
        link_up: bool,
    },
}

impl Observation {
    /// Whether the node is a master.
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }
}

/// Parses the text of `INFO replication` (and optionally `INFO server`,
/// concatenated) into an [`Observation`].
pub fn parse_info(text: &str) -> Result<Observation> {
    let mut role = None;
    let (mut host, mut port, mut link) = (None, None, None);
    let (mut master_off, mut slave_off, mut pid) = (None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        match k {
            "role" => role = Some(v.to_string()),
            "master_host" => host = Some(v.to_string()),
            "master_port" => port = Some(v.to_string()),
            "master_link_status" => link = Some(v == "up"),
            "master_repl_offset" => master_off = v.parse::<u64>().ok(),
            "slave_repl_offset" => slave_off = v.parse::<u64>().ok(),
            "process_id" => pid = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    let unexpected = |what: &str| Error::Unexpected(what.to_string());
    let role = match role.as_deref() {
        Some("master") => Role::Master,
        Some("slave") => Role::Replica {
            master: format!(
                "{}:{}",
                host.ok_or_else(|| unexpected("replica without master_host"))?,
                port.ok_or_else(|| unexpected("replica without master_port"))?
            ),
            link_up: link.unwrap_or(false),
        },
        Some(other) => return Err(unexpected(&format!("unknown role {other:?}"))),
        None => return Err(unexpected("INFO replication without a role")),
    };
    let offset = match role {
        Role::Master => master_off,
        Role::Replica { .. } => slave_off.or(master_off),
    }
    .unwrap_or(0);
    Ok(Observation { role, offset, pid })
}

/// A Redis node and the connection to it.
pub struct RedisNode {
    /// `host:port`, as listed in --redis-nodes.
    pub addr: String,
    client: redis::Client,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl RedisNode {
    /// A node reached over `link` (password, TLS); every call is bounded
    /// by `timeout`.
    pub fn new(
        addr: &str,
        link: &agenda_common::net::RedisLink,
        timeout: Duration,
    ) -> Result<Self> {
        let client = link.client(addr).map_err(Error::setup("--redis-nodes"))?;
        Ok(RedisNode {
            addr: addr.to_string(),
            client,
            timeout,
            conn: None,
        })
    }

    async fn conn(&mut self) -> Result<MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(Error::redis("connect"))?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection within the deadline; any failure drops
    /// the connection.
    async fn with_conn<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeout = self.timeout;
        let res = tokio::time::timeout(timeout, async {
            let c = self.conn().await?;
            f(c).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: what.to_string(),
                after: timeout,
            })
        });
        if res.is_err() {
            self.conn = None;
        }
        res
    }

    /// The health check: PING, then INFO replication + server.
    pub async fn check(&mut self) -> Result<Observation> {
        self.with_conn("check", |mut c| async move {
            let pong: String = redis::cmd("PING")
                .query_async(&mut c)
                .await
                .map_err(Error::redis("PING"))?;
            if pong != "PONG" {
                return Err(Error::Unexpected(format!("PING answered {pong:?}")));
            }
            let repl: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
                .map_err(Error::redis("INFO replication"))?;
            let server: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut c)
                .await
                .map_err(Error::redis("INFO server"))?;
            parse_info(&format!("{repl}\n{server}"))
        })
        .await
    }

    /// Has the node read its TLS files again (`CONFIG SET` of any of them
    /// makes redis-server reload all three): its certificate, key and the
    /// CAs it trusts.
    pub async fn reload_tls(&mut self, files: &agenda_common::tls::TlsFiles) -> Result<()> {
        let paths = [&files.cert, &files.key, &files.ca].map(|p| p.display().to_string());
        self.with_conn("CONFIG SET tls-*", |mut c| async move {
            let _: String = redis::cmd("CONFIG")
                .arg("SET")
                .arg("tls-cert-file")
                .arg(&paths[0])
                .arg("tls-key-file")
                .arg(&paths[1])
                .arg("tls-ca-cert-file")
                .arg(&paths[2])
                .query_async(&mut c)
                .await
                .map_err(Error::redis("CONFIG SET tls-*"))?;
            Ok(())
        })
        .await
    }

    /// `REPLICAOF NO ONE` (promotion).
    pub async fn make_master(&mut self) -> Result<()> {
        self.with_conn("REPLICAOF NO ONE", |mut c| async move {
            let _: String = redis::cmd("REPLICAOF")
                .arg("NO")
                .arg("ONE")
                .query_async(&mut c)
                .await
                .map_err(Error::redis("REPLICAOF NO ONE"))?;
            Ok(())
        })
        .await
    }

    /// `REPLICAOF host port` (fencing / demotion).
    pub async fn replicate(&mut self, primary: &str) -> Result<()> {
        let (host, port) = split_addr(primary)?;
        self.with_conn("REPLICAOF", |mut c| async move {
            let _: String = redis::cmd("REPLICAOF")
                .arg(&host)
                .arg(port)
                .query_async(&mut c)
                .await
                .map_err(Error::redis(format!("REPLICAOF {host} {port}")))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_master() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
                    slave0:ip=127.0.0.1,port=7402,state=online,offset=42,lag=0\r\n\
                    master_replid:abc\r\nmaster_repl_offset:42\r\n\n# Server\r\nprocess_id:1234\r\n";
        let o = parse_info(text).expect("parse");
        assert_eq!(o.role, Role::Master);
        assert_eq!(o.offset, 42);
        assert_eq!(o.pid, Some(1234));
    }

    #[test]
    fn parses_replica() {
        let text = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7401\r\n\
                    master_link_status:up\r\nslave_repl_offset:99\r\nmaster_repl_offset:99\r\n";
        let o = parse_info(text).expect("parse");
        assert_eq!(
            o.role,
            Role::Replica {
                master: "127.0.0.1:7401".into(),
                link_up: true
            }
        );
        assert_eq!(o.offset, 99);
        assert!(parse_info("# Replication\r\n").is_err());
    }
}
