//! Flags and environment of `agenda-vip`, and their validation.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{Error, Result};

/// agenda-vip: one beside each gateway. Elects, among the daemons of
/// --peers, the one machine that holds the virtual IP (VRRP-like adverts
/// over UDP, HMAC-authenticated), and holds it only while it also holds
/// the VIP lease in agenda-db (`/registry/vip/holder`), so no partition
/// leaves two holders. Gives the VIP up at once when the local gateway
/// stops answering --health-url.
#[derive(Debug, Clone, Parser)]
#[command(name = "agenda-vip", version)]
pub struct Config {
    /// This daemon's id, usually the machine's name (unique; it is the
    /// value of the VIP lease key, and the gateway's --vip-holder-id).
    #[arg(long, env = "AGENDA_VIP_ID")]
    pub id: String,
    /// The virtual IP with its prefix length, e.g. 10.77.0.10/24.
    #[arg(long, env = "AGENDA_VIP", value_parser = parse_cidr)]
    pub vip: (Ipv4Addr, u8),
    /// Network interface the VIP is added to.
    #[arg(long, env = "AGENDA_VIP_INTERFACE")]
    pub interface: String,
    /// UDP address adverts are received on (and sent from).
    #[arg(long, env = "AGENDA_VIP_BIND", default_value = "0.0.0.0:5405")]
    pub bind: String,
    /// The other daemons' advert addresses (`host:port`, comma-separated);
    /// adverts are sent to each (unicast).
    #[arg(long, env = "AGENDA_VIP_PEERS", value_delimiter = ',', required = true)]
    pub peers: Vec<String>,
    /// Priority, 1-254: the highest healthy daemon becomes master first.
    #[arg(long, env = "AGENDA_VIP_PRIORITY", default_value_t = 100,
          value_parser = clap::value_parser!(u8).range(1..=254))]
    pub priority: u8,
    /// Time between two adverts of the master (`100ms`, `1s`, or ms).
    /// A backup takes over after 3 x this plus a skew from the priority.
    #[arg(long, env = "AGENDA_VIP_ADVERT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub advert_interval: Duration,
    /// Take the VIP from a lower-priority master (the default).
    #[arg(long, overrides_with = "no_preempt")]
    pub preempt: bool,
    /// Never take the VIP from a healthy master, whatever its priority
    /// (one move less after a recovery).
    #[arg(long, overrides_with = "preempt")]
    pub no_preempt: bool,
    /// File holding the advert key, shared by every daemon (any bytes;
    /// surrounding whitespace is ignored). Or AGENDA_VIP_AUTH_KEY.
    #[arg(long, env = "AGENDA_VIP_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// The advert key itself (prefer --auth-key-file: flags are visible
    /// in `ps`).
    #[arg(long, env = "AGENDA_VIP_AUTH_KEY", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// agenda-db endpoints.
    #[command(flatten)]
    pub db: agenda_common::args::DbArgs,
    /// TLS identity (--tls-dir, --tls-name): mutual TLS on its gRPC links.
    #[command(flatten)]
    pub tls: agenda_common::args::TlsArgs,
    /// The local gateway's liveness URL (a local check: not /readyz,
    /// which needs the raft leader and would drop the VIP on both
    /// machines during every election). With --tls-dir the gateway
    /// serves https://, and its certificate is checked against the CA
    /// there.
    #[arg(
        long,
        env = "AGENDA_VIP_HEALTH_URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    pub health_url: String,
    /// Time between the starts of two health checks (a check still
    /// waiting for its answer delays the next).
    #[arg(long, env = "AGENDA_VIP_HEALTH_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// How long one check waits for its answer before it counts as
    /// failed. A gateway that is gone is seen at once (the connection is
    /// refused), so this only decides how long a gateway that answers
    /// slowly (starved of CPU under overload) is given: longer than its
    /// slowest answer then, or a busy machine gives the VIP away to one
    /// just as busy. A hung gateway is unhealthy after
    /// --health-fall times this.
    #[arg(long, env = "AGENDA_VIP_HEALTH_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Failed checks in a row that make the gateway unhealthy (a refused
    /// connection, nothing listening on the port, counts at once).
    #[arg(long, env = "AGENDA_VIP_HEALTH_FALL", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_fall: u32,
    /// Passed checks in a row that make it healthy again.
    #[arg(long, env = "AGENDA_VIP_HEALTH_RISE", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_rise: u32,
    /// TTL of the VIP lease in agenda-db. The holder renews it four times
    /// per TTL and gives the VIP up a sixth of the TTL before it could
    /// expire; a dead holder's VIP is free at most this long after its
    /// last renewal (an agenda-db leader change extends no lease).
    #[arg(long, env = "AGENDA_VIP_LEASE_TTL", default_value = "1500ms", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Extra wait before claiming a VIP whose holder vanished without
    /// releasing it (its lease expired), as Chubby's lock-delay.
    #[arg(long, env = "AGENDA_VIP_LOCK_DELAY", default_value = "300ms", value_parser = parse_duration)]
    pub lock_delay: Duration,
    /// On a planned stop (SIGTERM) while holding the VIP: how long the
    /// local gateway is given to drain its VIP connections before the
    /// address and the lease go (four fifths of it answering VIP requests
    /// 503 with Retry-After and `Connection: close`, then closing the idle
    /// ones too). Clients then retry on the next holder instead of finding
    /// their open connections reset by it. 0 releases at once.
    #[arg(long, env = "AGENDA_VIP_HANDOVER_GRACE", default_value = "500ms", value_parser = parse_duration)]
    pub handover_grace: Duration,
    /// Command run at every state change as `CMD STATE REASON` (through
    /// `sh -c`, not waited for).
    #[arg(long, env = "AGENDA_VIP_NOTIFY")]
    pub notify: Option<String>,
    /// HTTP listener for `/metrics`, `/healthz` and `/status` (JSON).
    #[arg(long, env = "AGENDA_VIP_HTTP", default_value = "127.0.0.1:7601")]
    pub http: String,
    /// Gratuitous ARP replies sent when the VIP is taken, the first at
    /// once. Spread over 2 s by default: Linux ignores an ARP that changes
    /// a neighbour entry updated less than a second ago (`locktime`).
    #[arg(long, env = "AGENDA_VIP_ARP_COUNT", default_value_t = 9,
          value_parser = clap::value_parser!(u32).range(1..=40))]
    pub arp_count: u32,
    /// Time between two gratuitous ARP replies.
    #[arg(long, env = "AGENDA_VIP_ARP_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub arp_interval: Duration,
    /// The `ip` command (iproute2).
    #[arg(long, env = "AGENDA_VIP_IP_CMD", default_value = "ip")]
    pub ip_cmd: String,
    /// The `arping` command (iputils-arping).
    #[arg(long, env = "AGENDA_VIP_ARPING_CMD", default_value = "arping")]
    pub arping_cmd: String,
    /// Logging.
    #[command(flatten)]
    pub log: agenda_common::args::LogArgs,
}

impl Config {
    /// Whether to preempt a lower-priority master.
    pub fn preempt(&self) -> bool {
        !self.no_preempt
    }

    /// The advert key, from the file or the environment.
    pub fn auth_key(&self) -> Result<Vec<u8>> {
        let key = match (&self.auth_key_file, &self.auth_key) {
            (Some(path), _) => std::fs::read(path)
                .map_err(|e| Error::Config(format!("--auth-key-file {}: {e}", path.display())))?,
            (None, Some(k)) => k.as_bytes().to_vec(),
            (None, None) => {
                return Err(Error::Config(
                    "an advert key is required: --auth-key-file PATH or AGENDA_VIP_AUTH_KEY".into(),
                ))
            }
        };
        let key = key.trim_ascii().to_vec();
        if key.len() < 16 {
            return Err(Error::Config(format!(
                "the advert key is {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom | base64`)",
                key.len()
            )));
        }
        Ok(key)
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty() || self.id.len() > crate::advert::MAX_ID_LEN {
            return Err(Error::Config(format!(
                "--id must be 1 to {} bytes",
                crate::advert::MAX_ID_LEN
            )));
        }
        if self.advert_interval < Duration::from_millis(10)
            || self.advert_interval > Duration::from_secs(10)
        {
            return Err(Error::Config(
                "--advert-interval must be between 10ms and 10s".into(),
            ));
        }
        if self.health_interval < Duration::from_millis(10) {
            return Err(Error::Config(
                "--health-interval must be at least 10ms".into(),
            ));
        }
        if self.health_timeout < Duration::from_millis(10) {
            return Err(Error::Config(
                "--health-timeout must be at least 10ms".into(),
            ));
        }
        if self.handover_grace > Duration::from_secs(10) {
            return Err(Error::Config("--handover-grace must be at most 10s".into()));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(Error::Config("--lease-ttl must be at least 300ms".into()));
        }
        if self.interface.is_empty() {
            return Err(Error::Config("--interface must not be empty".into()));
        }
        self.auth_key().map(|_| ())
    }
}

/// `10.77.0.10/24` (a bare address means /32).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, "32"));
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-32)"))?;
    Ok((ip, prefix))
}

/// `100ms`, `1.5s`, `2s`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "ms"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 100ms, 1.5s)"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        _ => return Err(format!("{s:?}: unit must be ms or s")),
    };
    if !(0.0..=86_400_000.0).contains(&ms) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cidrs_parse() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10m").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(
            parse_cidr("10.77.0.10/24"),
            Ok(([10, 77, 0, 10].into(), 24))
        );
        assert_eq!(parse_cidr("10.77.0.10"), Ok(([10, 77, 0, 10].into(), 32)));
        assert!(parse_cidr("10.77.0.10/33").is_err());
        assert!(parse_cidr("vip").is_err());
    }

    #[test]
    fn flags_parse_and_validate() {
        let cfg = Config::try_parse_from([
            "agenda-vip",
            "--id",
            "machine-a",
            "--vip",
            "10.77.0.10/24",
            "--interface",
            "eth0",
            "--peers",
            "10.77.0.12:5405",
            "--auth-key",
            "0123456789abcdef0123",
            "--no-preempt",
        ])
        .unwrap();
        assert!(!cfg.preempt());
        assert_eq!(cfg.advert_interval, Duration::from_millis(100));
        cfg.validate().unwrap();
        let weak = Config::try_parse_from([
            "agenda-vip",
            "--id",
            "a",
            "--vip",
            "10.77.0.10/24",
            "--interface",
            "eth0",
            "--peers",
            "x:1",
            "--auth-key",
            "short",
        ])
        .unwrap();
        assert!(weak
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least 16"));
    }
}
