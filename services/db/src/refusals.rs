//! Refused certificates, for the audit log: each request a caller's role
//! may not make is counted per role and source, and every
//! [`WRITE_EVERY`] one entry per pair is written (`cert_refused`, with the
//! count and one of the reasons), so a flood of refusals does not become
//! one replicated write each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenda_common::shutdown::CancellationToken;
use agenda_proto::db::PutRequest;

use crate::service::Db;
use crate::state_machine::AUDIT_PREFIX;

/// How often refusals are written.
pub const WRITE_EVERY: Duration = Duration::from_secs(10);

/// Pairs kept between writes at most; beyond that they are counted under
/// one pair for "others".
const MAX_PAIRS: usize = 10_000;

/// Refusals not yet written: (role, source) -> (count, a reason).
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<(String, String), (u64, String)>>);

impl Refusals {
    /// Counts one refusal.
    pub fn note(&self, role: &str, source: &str, reason: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = (role.to_string(), source.to_string());
        if map.len() >= MAX_PAIRS && !map.contains_key(&key) {
            key = ("(others)".into(), String::new());
        }
        let e = map.entry(key).or_insert((0, reason.to_string()));
        e.0 += 1;
    }

    /// The audit entries (key, JSON) of the refusals since the last call.
    pub fn take(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let drained: Vec<_> = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().collect()
        };
        drained
            .into_iter()
            .map(|((role, source), (count, reason))| {
                let id = uuid::Uuid::now_v7();
                let entry = serde_json::json!({
                    "id": id,
                    "at": chrono::Utc::now(),
                    "actor_id": null,
                    "actor": role,
                    "action": "cert_refused",
                    "source": source,
                    "details": {"count": count, "reason": reason},
                });
                let key = [AUDIT_PREFIX, id.to_string().as_bytes()].concat();
                (key, entry.to_string().into_bytes())
            })
            .collect()
    }
}

/// Writes the refusals every [`WRITE_EVERY`] (and once more at shutdown).
pub async fn write(refusals: Arc<Refusals>, db: Db, stop: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(WRITE_EVERY) => false,
        };
        for (key, value) in refusals.take() {
            let put = PutRequest {
                key,
                value,
                ..Default::default()
            };
            if let Err(e) = db.put(put).await {
                tracing::warn!(error = %e, "a refused certificate was not written to the audit log");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_role_and_source() {
        let r = Refusals::default();
        for _ in 0..3 {
            r.note(
                "gateway",
                "10.0.0.1",
                "the gateway role may not write key \"/x\"",
            );
        }
        r.note("vip", "10.0.0.2", "no");
        let mut entries: Vec<serde_json::Value> = r
            .take()
            .into_iter()
            .map(|(k, v)| {
                assert!(k.starts_with(AUDIT_PREFIX));
                serde_json::from_slice(&v).unwrap()
            })
            .collect();
        entries.sort_by(|a, b| a["actor"].as_str().cmp(&b["actor"].as_str()));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["actor"], "gateway");
        assert_eq!(entries[0]["details"]["count"], 3);
        assert_eq!(entries[0]["source"], "10.0.0.1");
        assert_eq!(entries[1]["action"], "cert_refused");
        assert!(r.take().is_empty());
    }
}
