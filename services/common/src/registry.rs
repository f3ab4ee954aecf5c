//! The service registry, kept in agenda-db.
//!
//! Key layout (all under `/registry/`):
//! - `/registry/services/{service}/{instance}` = address, attached to the
//!   instance's lease: it vanishes when the instance stops renewing.
//! - `/registry/config/{name}` = value, e.g. the Redis primary address.
//!
//! Readers list a prefix, then watch it from the next revision; when the
//! watch breaks (node died, compaction) they list again, so they always
//! converge on the current content.

use std::collections::BTreeMap;
use std::time::Duration;

use agenda_proto::db::{event, KeyValue, PutRequest, RangeRequest, WatchRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db_client::DbClient;
use crate::error::{Error, Result};

/// Prefix of service instance keys.
pub const SERVICES: &str = "/registry/services/";
/// Prefix of config keys.
pub const CONFIG: &str = "/registry/config/";
/// The current Redis primary, published by the acting supervisor.
pub const REDIS_PRIMARY: &str = "/registry/config/redis-primary";
/// The election of the acting Redis supervisor.
pub const REDIS_SUPERVISOR_ELECTION: &str = "/registry/election/redis-supervisor";
/// The election of the notification relay (one users replica).
pub const NOTIFICATION_RELAY_ELECTION: &str = "/registry/election/notification-relay";
/// Prefix of the VIP's keys.
pub const VIP: &str = "/registry/vip/";
/// The VIP lease: the machine whose gateway serves the VIP.
pub const VIP_HOLDER: &str = "/registry/vip/holder";
/// A holder handing the VIP over (a planned stop) writes here, on its
/// lease, where its drain is ([`vip_handover`]): its gateway stops serving
/// VIP requests, then closes its idle VIP connections, before the address
/// moves.
pub const VIP_RELEASING: &str = "/registry/vip/releasing";

/// The steps of a planned VIP handover, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The holder's gateway answers every VIP request 503 with
    /// `Connection: close`: each connection that carries a request ends
    /// cleanly, and its client retries (on the next holder). Idle ones are
    /// left alone: closing one races with a request the client may be
    /// sending on it at that moment.
    Refusing,
    /// Then the connections still idle are closed too (few are left).
    Closing,
}

/// The [`VIP_RELEASING`] value of `holder`'s handover at `step`.
pub fn vip_handover(holder: &str, step: Handover) -> Vec<u8> {
    match step {
        Handover::Refusing => holder.as_bytes().to_vec(),
        Handover::Closing => format!("{holder}\nclosing").into_bytes(),
    }
}

/// The record under [`REDIS_PRIMARY`]: `{"addr": "host:port", "epoch": N}`.
/// The acting supervisor writes it; every Redis client (the bus, the
/// relay, the gateway's stream reader), the supervisors and agendactl read
/// it, so its shape lives here once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisPrimary {
    /// `host:port`.
    pub addr: String,
    /// Bumped by every promotion, so a reader can tell a newer primary
    /// from an older record that names the same address.
    pub epoch: u64,
}

impl RedisPrimary {
    /// Parses the record's value.
    pub fn decode(value: &[u8]) -> serde_json::Result<RedisPrimary> {
        serde_json::from_slice(value)
    }

    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        // Two plain fields: serializing them cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// Instance id (unique within the service).
    pub id: String,
    /// Address clients connect to.
    pub addr: String,
}

fn service_prefix(service: &str) -> String {
    format!("{SERVICES}{service}/")
}

/// A live registration; dropping it stops renewing (the entry then expires
/// after its TTL), [`Registration::deregister`] removes it at once.
pub struct Registration {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    /// Removes the instance from the registry now.
    pub async fn deregister(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Like a crash: stop renewing, leave the entry to its TTL.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Registers `instance` of `service` under a lease of `ttl` and keeps it
/// alive (renewing every ttl/3, re-registering if the lease was lost).
pub async fn register(
    client: &DbClient,
    service: &str,
    instance: Instance,
    ttl: Duration,
) -> Result<Registration> {
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let key = format!("{}{}", service_prefix(service), instance.id);
    let mut lease = put_with_lease(client, &key, &instance.addr, ttl_secs).await?;
    tracing::info!(service, instance = %instance.id, addr = %instance.addr, lease, "registered in the registry");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let client = client.clone();
    let period = Duration::from_secs(ttl_secs as u64) / 3;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
            match client.lease_keep_alive(lease).await {
                Ok(_) => {}
                Err(Error::NotFound(_)) => {
                    tracing::warn!(%key, "registry lease expired; registering again");
                    match put_with_lease(&client, &key, &instance.addr, ttl_secs).await {
                        Ok(l) => lease = l,
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "re-registration failed; will retry")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%key, error = %e, "registry keep-alive failed; will retry")
                }
            }
        }
        if let Err(e) = client.lease_revoke(lease).await {
            tracing::warn!(%key, error = %e, "could not deregister; the entry expires with its lease");
        } else {
            tracing::info!(%key, "deregistered");
        }
    });
    Ok(Registration {
        stop,
        task: Some(task),
    })
}

async fn put_with_lease(client: &DbClient, key: &str, value: &str, ttl: i64) -> Result<i64> {
    let lease = client
        .lease_grant(Duration::from_secs(ttl.max(1) as u64))
        .await?
        .id;
    client
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
            ..Default::default()
        })
        .await?;
    Ok(lease)
}

/// Current instances of a service.
pub async fn list_instances(client: &DbClient, service: &str) -> Result<Vec<Instance>> {
    let prefix = service_prefix(service);
    let resp = client.get_prefix(prefix.clone()).await?;
    Ok(to_instances(
        &prefix,
        resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
    ))
}

fn to_instances(prefix: &str, map: BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Instance> {
    map.into_iter()
        .map(|(k, v)| Instance {
            id: String::from_utf8_lossy(&k[prefix.len().min(k.len())..]).into_owned(),
            addr: String::from_utf8_lossy(&v).into_owned(),
        })
        .collect()
}

/// Follows the instances of a service; the receiver always holds the
/// latest list. The background task ends when `stop` is cancelled.
pub fn watch_instances(
    client: &DbClient,
    service: &str,
    stop: CancellationToken,
) -> watch::Receiver<Vec<Instance>> {
    let prefix = service_prefix(service);
    let mut map_rx = watch_prefix(client, prefix.clone(), stop.clone());
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        loop {
            let list = to_instances(&prefix, map_rx.borrow_and_update().clone());
            tx.send_replace(list);
            tokio::select! {
                () = stop.cancelled() => return,
                changed = map_rx.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

/// Reads a config key (`/registry/config/{name}`).
pub async fn get_config(client: &DbClient, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(client
        .get(format!("{CONFIG}{name}"))
        .await?
        .map(|kv| kv.value))
}

/// Writes a config key.
pub async fn put_config(client: &DbClient, name: &str, value: &[u8]) -> Result<()> {
    client
        .put(PutRequest {
            key: format!("{CONFIG}{name}").into_bytes(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Follows one config key; `None` while it does not exist.
pub fn watch_config(
    client: &DbClient,
    name: &str,
    stop: CancellationToken,
) -> watch::Receiver<Option<Vec<u8>>> {
    watch_key(client, format!("{CONFIG}{name}"), stop)
}

/// Follows one key; `None` while it does not exist.
pub fn watch_key(
    client: &DbClient,
    key: String,
    stop: CancellationToken,
) -> watch::Receiver<Option<Vec<u8>>> {
    let mut map_rx = watch_prefix(client, key.clone(), stop.clone());
    let key = key.into_bytes();
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let value = map_rx.borrow_and_update().get(&key).cloned();
            tx.send_if_modified(|cur| {
                if *cur != value {
                    *cur = value;
                    true
                } else {
                    false
                }
            });
            tokio::select! {
                () = stop.cancelled() => return,
                changed = map_rx.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

/// Mirrors every key under `prefix` into a map that follows changes.
pub fn watch_prefix(
    client: &DbClient,
    prefix: String,
    stop: CancellationToken,
) -> watch::Receiver<BTreeMap<Vec<u8>, Vec<u8>>> {
    watch_prefix_with(client, prefix, stop, |kv| kv.value)
}

/// [`watch_prefix`] keeping `project(kv)` of each key (its value, or its
/// version too). The map is replaced (and receivers told) once listed,
/// then after every batch of changes.
pub fn watch_prefix_with<V: Clone + Send + Sync + 'static>(
    client: &DbClient,
    prefix: String,
    stop: CancellationToken,
    project: fn(KeyValue) -> V,
) -> watch::Receiver<BTreeMap<Vec<u8>, V>> {
    let (tx, rx) = watch::channel(BTreeMap::new());
    let client = client.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if let Err(e) = mirror(&client, &prefix, &tx, &stop, project).await {
                tracing::debug!(%prefix, error = %e, "registry watch interrupted; listing again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    });
    rx
}

/// Keys per read of a listing: a prefix followed by every gateway (the
/// session generations, one per account that ever ended its sessions)
/// can outgrow what one answer may carry (the client's 64 MiB).
pub const LIST_PAGE: i64 = 5_000;

/// Every key under `prefix` as of one revision, read `page` keys at a
/// time (each read after the first at the first one's revision), as
/// `project(kv)`; the keys and that revision.
pub async fn list_prefix<V>(
    client: &DbClient,
    prefix: &str,
    page: i64,
    project: fn(KeyValue) -> V,
) -> Result<(BTreeMap<Vec<u8>, V>, i64)> {
    let end = crate::db_client::prefix_end(prefix).into_bytes();
    let mut start = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut map = BTreeMap::new();
    loop {
        let resp = client
            .range(RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: page,
                revision,
                ..Default::default()
            })
            .await?;
        if revision == 0 {
            revision = resp.header.map_or(0, |h| h.revision);
        }
        let more = resp.more;
        for kv in resp.kvs {
            // Just past it: the next key in byte order.
            start = [kv.key.as_slice(), &[0]].concat();
            map.insert(kv.key.clone(), project(kv));
        }
        if !more {
            return Ok((map, revision));
        }
    }
}

async fn mirror<V: Clone>(
    client: &DbClient,
    prefix: &str,
    tx: &watch::Sender<BTreeMap<Vec<u8>, V>>,
    stop: &CancellationToken,
    project: fn(KeyValue) -> V,
) -> Result<()> {
    let (mut map, revision) = list_prefix(client, prefix, LIST_PAGE, project).await?;
    tx.send_replace(map.clone());
    let mut stream = client
        .watch(WatchRequest {
            key: prefix.as_bytes().to_vec(),
            prefix: true,
            start_revision: revision + 1,
            prev_kv: false,
        })
        .await?;
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            m = stream.message() => m?,
        };
        let Some(msg) = msg else {
            return Err(Error::Unavailable("watch stream ended".into()));
        };
        for ev in msg.events {
            let Some(kv) = ev.kv else { continue };
            if ev.r#type == event::EventType::Delete as i32 {
                map.remove(&kv.key);
            } else {
                map.insert(kv.key.clone(), project(kv));
            }
        }
        tx.send_replace(map.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written by earlier releases (and read by the tests'
    /// own client) keep this exact shape.
    #[test]
    fn the_primary_record_keeps_its_wire_shape() {
        let p = RedisPrimary::decode(br#"{"addr":"10.77.0.11:7401","epoch":3}"#).unwrap();
        assert_eq!(
            p,
            RedisPrimary {
                addr: "10.77.0.11:7401".into(),
                epoch: 3
            }
        );
        assert_eq!(RedisPrimary::decode(&p.encode()).unwrap(), p);
        assert!(RedisPrimary::decode(b"10.77.0.11:7401").is_err());
    }
}
