//! A fake upstream: replicas of both services that answer what a test
//! scripts, and a record of every call they got.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenda_calendar::api::{Op, Service};
use agenda_calendar::ApiError;
use agenda_common::registry::Instance;
use agenda_proto::calendar::{CallReply, CallRequest};
use serde_json::{json, Value};

use crate::upstream::{Replicas, Sending};

/// What a replica does with one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answers with this status and JSON body.
    Answer(u16, Value),
    /// Refuses the connection: the call never left the gateway.
    Refused,
    /// The connection breaks mid-call (the replica died): the call may
    /// have been applied.
    Broken,
    /// Never answers (a machine that lost power).
    Hang,
    /// Fails with this gRPC code and a message meant for logs only.
    Fail(tonic::Code),
    /// Refuses at once: at capacity (UNAVAILABLE with a pushback).
    Overloaded,
    /// Does the other reply after a while.
    After(Duration, Box<Reply>),
}

/// What the fake replicas were asked.
#[derive(Debug, Clone)]
pub struct Call {
    /// The replica's address.
    pub addr: String,
    /// The operation.
    pub op: Op,
    /// The JSON of the operation, as sent.
    pub payload: Vec<u8>,
    /// The gateway's request id.
    pub request_id: String,
    /// The caller's id ("" when anonymous).
    pub caller: String,
}

/// Replicas of both services; each address answers its scripted replies
/// in order, then its standing reply, `200 {"replica": addr}` unless set.
#[derive(Default)]
pub struct Fake {
    users: Vec<Instance>,
    groups: Vec<Instance>,
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    standing: HashMap<String, Reply>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    /// Users replicas `users`, groups replicas `groups` (addresses).
    pub fn new(users: &[&str], groups: &[&str]) -> Fake {
        let instances = |addrs: &[&str]| {
            addrs
                .iter()
                .map(|a| Instance {
                    id: a.to_string(),
                    addr: a.to_string(),
                })
                .collect()
        };
        Fake {
            users: instances(users),
            groups: instances(groups),
            ..Fake::default()
        }
    }

    /// Two users replicas `u1`, `u2` and two groups replicas `g1`, `g2`.
    pub fn two_each() -> Fake {
        Fake::new(&["u1", "u2"], &["g1", "g2"])
    }

    /// `addr` answers its next calls with `replies`, in order.
    pub fn script(self, addr: &str, replies: impl IntoIterator<Item = Reply>) -> Fake {
        self.script
            .lock()
            .expect("script")
            .entry(addr.to_string())
            .or_default()
            .extend(replies);
        self
    }

    /// `addr` answers every call after its script with `reply`.
    pub fn always(mut self, addr: &str, reply: Reply) -> Fake {
        self.standing.insert(addr.to_string(), reply);
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// The addresses called so far, in order.
    pub fn called(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.addr).collect()
    }
}

/// How tonic reports a connection that could not be made.
fn refused() -> tonic::Status {
    let mut s = tonic::Status::unavailable("error trying to connect: tcp connect error");
    s.set_source(Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    s
}

fn outcome(reply: Reply) -> Sending {
    Box::pin(async move {
        match reply {
            Reply::Answer(status, body) => Ok(CallReply {
                status: u32::from(status),
                body: body.to_string().into_bytes(),
            }),
            Reply::Refused => Err(refused()),
            Reply::Broken => Err(tonic::Status::unavailable(
                "error reading a body from connection: connection reset",
            )),
            Reply::Hang => std::future::pending().await,
            Reply::Overloaded => Err(agenda_common::admission::overloaded_status()),
            Reply::Fail(code) => Err(tonic::Status::new(
                code,
                "replica panicked at store/events.rs:42 (secret detail)",
            )),
            Reply::After(wait, then) => {
                tokio::time::sleep(wait).await;
                outcome(*then).await
            }
        }
    })
}

impl Replicas for Arc<Fake> {
    fn instances(&self, service: Service) -> Vec<Instance> {
        match service {
            Service::Users => self.users.clone(),
            Service::Groups => self.groups.clone(),
        }
    }

    fn send(
        &self,
        service: Service,
        addr: &str,
        request: tonic::Request<CallRequest>,
    ) -> Result<Sending, ApiError> {
        let req = request.into_inner();
        let op: Op = serde_json::from_slice(&req.op).expect("the gateway sends an Op");
        assert_eq!(op.service(), service, "{op:?} sent to the wrong service");
        self.calls.lock().expect("calls").push(Call {
            addr: addr.to_string(),
            op,
            payload: req.op,
            request_id: req.request_id,
            caller: req.caller_id,
        });
        let next = self
            .script
            .lock()
            .expect("script")
            .get_mut(addr)
            .and_then(VecDeque::pop_front);
        let reply = next
            .or_else(|| self.standing.get(addr).cloned())
            .unwrap_or_else(|| Reply::Answer(200, json!({ "replica": addr })));
        Ok(outcome(reply))
    }
}
