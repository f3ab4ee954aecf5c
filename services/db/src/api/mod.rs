//! The two faces of a node: gRPC for services, REST for operators. Both
//! are thin adapters over [`crate::service::Db`].

pub mod grpc;
pub mod http;
