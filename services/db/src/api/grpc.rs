//! gRPC face (`agenda.db.v1.Db`).

use std::pin::Pin;

use agenda_proto::db::db_server::Db as DbApi;
use agenda_proto::db::*;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::access;
use crate::service::Db;

/// Implements the generated service trait.
pub struct GrpcApi {
    /// Request layer.
    pub db: Db,
    /// Refused certificates, counted for the audit log.
    pub refusals: std::sync::Arc<crate::refusals::Refusals>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;
type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl DbApi for GrpcApi {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let db = self.caller(&r, |req| access::Request::Range(req))?;
        Ok(Response::new(db.range(r.into_inner()).await?))
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let db = self.caller(&r, |req| access::Request::Put(req))?;
        Ok(Response::new(db.put(r.into_inner()).await?))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let db = self.caller(&r, |req| access::Request::Delete(req))?;
        Ok(Response::new(db.delete(r.into_inner()).await?))
    }

    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let db = self.caller(&r, |req| access::Request::Txn(req))?;
        Ok(Response::new(db.txn(r.into_inner()).await?))
    }

    async fn lease_grant(
        &self,
        r: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let db = self.caller(&r, |_| access::Request::LeaseGrant)?;
        Ok(Response::new(db.lease_grant(r.into_inner()).await?))
    }

    async fn lease_keep_alive(
        &self,
        r: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        // Checked against the lease's keys at apply (`StateMachine::lease_access`).
        let db = self.caller(&r, |_| access::Request::LeaseGrant)?;
        Ok(Response::new(db.lease_keep_alive(r.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        r: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let db = self.caller(&r, |_| access::Request::LeaseGrant)?;
        Ok(Response::new(db.lease_revoke(r.into_inner()).await?))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, r: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let db = self.caller(&r, |req| access::Request::Watch(req))?;
        let rx = db.watch(r.into_inner()).await?;
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cluster_status(
        &self,
        _: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let s = self.db.status().await?;
        Ok(Response::new(ClusterStatusResponse {
            header: Some(ResponseHeader {
                member_id: s.id,
                revision: s.revision,
                raft_term: s.term,
            }),
            leader_id: s.leader,
            term: s.term,
            commit_index: s.commit,
            applied_index: s.applied,
            members: s
                .members
                .into_iter()
                .map(|(id, addr)| Member { id, addr })
                .collect(),
            role: s.role.to_string(),
            compact_revision: s.compact_revision,
            voters: s.voters,
        }))
    }

    async fn member_add(
        &self,
        r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        self.operator_only(&r, "change the cluster's members")?;
        Ok(Response::new(self.db.member_add(r.into_inner()).await?))
    }

    async fn member_remove(
        &self,
        r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        self.operator_only(&r, "change the cluster's members")?;
        Ok(Response::new(self.db.member_remove(r.into_inner()).await?))
    }

    async fn move_leader(
        &self,
        r: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.operator_only(&r, "move the leader")?;
        let leader_id = self.db.move_leader(r.into_inner().target_id).await?;
        Ok(Response::new(MoveLeaderResponse { leader_id }))
    }

    async fn compact(
        &self,
        r: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.operator_only(&r, "compact the history")?;
        Ok(Response::new(self.db.compact(r.into_inner()).await?))
    }

    type SnapshotStream = SnapshotStream;

    /// Operators only: the state holds signing keys and password hashes.
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.operator_only(&r, "take a backup")?;
        let sm = self.db.snapshot().await?;
        let (header, body) = tokio::task::spawn_blocking(move || crate::backup::encode(&sm))
            .await
            .map_err(|e| Status::internal(format!("encoding the snapshot: {e}")))?;
        let header = SnapshotHeader {
            member_id: self.db.status().await?.id,
            ..header
        };
        tracing::info!(
            revision = header.revision,
            bytes = header.size,
            "sending a snapshot (backup)"
        );
        let chunks = crate::backup::chunks(header, body);
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }
}

impl GrpcApi {
    /// PERMISSION_DENIED (and counted for the audit log) unless the caller
    /// is the operator: membership changes and backups (`what`).
    fn operator_only<T>(&self, r: &Request<T>, what: &str) -> Result<(), Status> {
        require(r, &["operator"], what).inspect_err(|s| {
            let certs = r.peer_certs();
            let role = agenda_common::tls::caller_role(certs.as_ref().map(|c| c.as_slice()));
            let source = r
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let role = role.as_deref().unwrap_or("(no role)");
            self.refusals.note(role, &source, s.message());
        })
    }

    /// The request layer acting for this caller (see [`Db::for_caller`]),
    /// or PERMISSION_DENIED unless the caller's role may do what `request`
    /// says ([`access`]). A plaintext caller has no role and is not
    /// checked.
    fn caller<T>(
        &self,
        r: &Request<T>,
        request: impl for<'a> FnOnce(&'a T) -> access::Request<'a>,
    ) -> Result<Db, Status> {
        let certs = r.peer_certs();
        let role = agenda_common::tls::caller_role(certs.as_ref().map(|c| c.as_slice()));
        if let Some(role) = &role {
            if let Err(why) = access::check(role, request(r.get_ref())) {
                let source = r
                    .remote_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                self.refusals.note(role, &source, &why);
                return Err(Status::permission_denied(why));
            }
        }
        Ok(self.db.for_caller(role))
    }
}

/// PERMISSION_DENIED unless the caller's certificate names one of
/// `roles` (over plaintext there is no certificate and nothing to check).
pub fn require<T>(r: &Request<T>, roles: &[&str], what: &str) -> Result<(), Status> {
    let certs = r.peer_certs();
    agenda_common::tls::require_role(certs.as_ref().map(|c| c.as_slice()), roles, what)
        .map_err(Status::permission_denied)
}
