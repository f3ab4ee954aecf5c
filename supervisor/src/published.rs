//! The published primary in the registry,
//! `/registry/config/redis-primary` = `{"addr": "host:port", "epoch": N}`:
//! reading it with its mod_revision, and replacing it in a txn that
//! compares that mod_revision and that the election key is still ours.

use agenda_common::registry::RedisPrimary;
use agenda_common::DbClient;
use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};

use crate::election;
use crate::error::{Error, Result};

/// The registry key.
pub const KEY: &str = agenda_common::registry::REDIS_PRIMARY;

/// The record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The parsed record (`None`: absent or malformed).
    pub primary: Option<RedisPrimary>,
    /// The key's mod_revision (0: absent).
    pub mod_revision: i64,
}

/// Reads the record (linearizable).
pub async fn read(db: &DbClient) -> Result<Published> {
    let Some(kv) = db.get(KEY).await? else {
        return Ok(Published {
            primary: None,
            mod_revision: 0,
        });
    };
    let primary = match RedisPrimary::decode(&kv.value) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "malformed {KEY} record; it will be replaced");
            None
        }
    };
    Ok(Published {
        primary,
        mod_revision: kv.mod_revision,
    })
}

/// Publishes `primary` if the record is still at `read_revision` and `id`
/// still holds the election key ([`Error::Conflict`] otherwise). Returns
/// the new mod_revision.
pub async fn publish(
    db: &DbClient,
    id: &str,
    read_revision: i64,
    primary: &RedisPrimary,
) -> Result<i64> {
    let value = primary.encode();
    let resp = db
        .txn(TxnRequest {
            compare: vec![
                Compare {
                    key: KEY.as_bytes().to_vec(),
                    target: compare::Target::ModRevision as i32,
                    result: compare::Result::Equal as i32,
                    number: read_revision,
                    ..Default::default()
                },
                election::guard(id),
            ],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: KEY.as_bytes().to_vec(),
                    value,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await?;
    if !resp.succeeded {
        return Err(Error::Conflict);
    }
    Ok(resp.header.map_or(0, |h| h.revision))
}
