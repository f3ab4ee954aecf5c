//! A client of one agenda-db key used as a register (read, write,
//! compare-and-set), recording every operation for the
//! [`crate::linearizability`] checker. Used by the db tests and by the
//! chaos runs (which carry histories between processes as JSON).

use std::time::Instant;

use agenda_common::DbClient;
use agenda_proto::db::{compare, request_op, Compare, PutRequest, RequestOp, TxnRequest};
use serde_json::{json, Value};

use crate::linearizability::{Op, Operation, Outcome};

/// One client's state: its id, random stream and the value it last read
/// (what its next compare-and-set expects).
pub struct RegisterClient {
    db: DbClient,
    id: u64,
    rng: u64,
    n: u64,
    last_seen: Option<Vec<u8>>,
}

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }
}

/// The compare-and-set of a register: `key` becomes `new` if it holds
/// `expect` (`None`: absent). Shared with the simulator's clients, so the
/// real-process tests and the simulation judge the same operation.
pub fn cas_txn(key: &[u8], expect: &Option<Vec<u8>>, new: Vec<u8>) -> TxnRequest {
    let cmp = match expect {
        Some(v) => Compare {
            key: key.to_vec(),
            target: compare::Target::Value as i32,
            result: compare::Result::Equal as i32,
            value: v.clone(),
            number: 0,
        },
        // A missing key has version 0 (a value compare never matches it).
        None => Compare {
            key: key.to_vec(),
            target: compare::Target::Version as i32,
            result: compare::Result::Equal as i32,
            value: Vec::new(),
            number: 0,
        },
    };
    TxnRequest {
        compare: vec![cmp],
        success: vec![RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: key.to_vec(),
                value: new,
                ..Default::default()
            })),
        }],
        ..Default::default()
    }
}

impl RegisterClient {
    /// Client `id` (also seeds its random choices).
    pub fn new(db: DbClient, id: u64) -> Self {
        RegisterClient {
            db,
            id,
            rng: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            n: 0,
            last_seen: None,
        }
    }

    /// A random number (xorshift), also used to pick keys.
    pub fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One random operation on `key`, timed against `epoch`. `None` for a
    /// read that failed (it had no effect, so it is left out).
    pub async fn step(&mut self, key: &str, epoch: Instant) -> Option<Operation> {
        let (cl, n) = (self.id, self.n);
        self.n += 1;
        let choice = (self.random() >> 8) % 3;
        let call = epoch.elapsed().as_nanos() as u64;
        let (op, outcome) = match choice {
            0 => {
                let v = self.db.get(key).await.ok()?.map(|kv| kv.value);
                self.last_seen = v.clone();
                (Op::Read, Outcome::Read(v))
            }
            1 => {
                let v = format!("{cl}-{n}").into_bytes();
                let r = self.db.put(put(key, v.clone())).await;
                (
                    Op::Write(Some(v)),
                    if r.is_ok() {
                        Outcome::Write
                    } else {
                        Outcome::Unknown
                    },
                )
            }
            _ => {
                let new = format!("{cl}-{n}-cas").into_bytes();
                let expect = self.last_seen.clone();
                let r = self
                    .db
                    .txn(cas_txn(key.as_bytes(), &expect, new.clone()))
                    .await;
                let outcome = match r {
                    Ok(t) => Outcome::Cas(t.succeeded),
                    Err(_) => Outcome::Unknown,
                };
                (
                    Op::Cas {
                        expect,
                        new: Some(new),
                    },
                    outcome,
                )
            }
        };
        let ret = (!matches!(outcome, Outcome::Unknown)).then(|| epoch.elapsed().as_nanos() as u64);
        Some(Operation {
            client: cl,
            call,
            ret,
            op,
            outcome,
        })
    }
}

fn text(v: &Option<Vec<u8>>) -> Value {
    v.as_ref()
        .map_or(Value::Null, |v| json!(String::from_utf8_lossy(v)))
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| s.as_bytes().to_vec())
}

/// An operation as JSON (the values this client writes are UTF-8).
pub fn to_json(o: &Operation) -> Value {
    let (op, a, b) = match &o.op {
        Op::Read => ("read", Value::Null, Value::Null),
        Op::Write(v) => ("write", text(v), Value::Null),
        Op::Cas { expect, new } => ("cas", text(expect), text(new)),
    };
    let outcome = match &o.outcome {
        Outcome::Read(v) => json!({"read": text(v)}),
        Outcome::Write => json!("write"),
        Outcome::Cas(ok) => json!({"cas": ok}),
        Outcome::Unknown => json!("unknown"),
    };
    json!({"client": o.client, "call": o.call, "ret": o.ret, "op": op, "a": a, "b": b, "outcome": outcome})
}

/// The inverse of [`to_json`].
pub fn from_json(v: &Value) -> Option<Operation> {
    let op = match v["op"].as_str()? {
        "read" => Op::Read,
        "write" => Op::Write(bytes(&v["a"])),
        "cas" => Op::Cas {
            expect: bytes(&v["a"]),
            new: bytes(&v["b"]),
        },
        _ => return None,
    };
    let o = &v["outcome"];
    let outcome = if o == "write" {
        Outcome::Write
    } else if o == "unknown" {
        Outcome::Unknown
    } else if let Some(ok) = o.get("cas").and_then(Value::as_bool) {
        Outcome::Cas(ok)
    } else if o.get("read").is_some() {
        Outcome::Read(bytes(&o["read"]))
    } else {
        return None;
    };
    Some(Operation {
        client: v["client"].as_u64()?,
        call: v["call"].as_u64()?,
        ret: v["ret"].as_u64(),
        op,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_survive_json() {
        let ops = [
            Operation {
                client: 1,
                call: 5,
                ret: Some(9),
                op: Op::Read,
                outcome: Outcome::Read(None),
            },
            Operation {
                client: 1,
                call: 5,
                ret: Some(9),
                op: Op::Read,
                outcome: Outcome::Read(Some(b"x".to_vec())),
            },
            Operation {
                client: 2,
                call: 6,
                ret: None,
                op: Op::Write(Some(b"v".to_vec())),
                outcome: Outcome::Unknown,
            },
            Operation {
                client: 3,
                call: 7,
                ret: Some(8),
                op: Op::Cas {
                    expect: None,
                    new: Some(b"n".to_vec()),
                },
                outcome: Outcome::Cas(true),
            },
        ];
        for o in ops {
            assert_eq!(from_json(&to_json(&o)), Some(o));
        }
    }
}
