//! Who may touch which keys: agenda-db's permissions per caller role
//! (etcd's RBAC, keyed by the role in the caller's certificate), and the
//! checks of every request that names keys. Pure: the gRPC face calls
//! [`check`] with the role of a TLS caller (a plaintext deployment has no
//! roles and is not checked).
//!
//! A request's keys are an interval (one key, a prefix, or `[key,
//! range_end)`) that must lie wholly inside what the role may read or
//! write; a transaction is checked compare by compare and operation by
//! operation, in both branches.
//!
//! Lease keep-alives and revokes are checked where the lease's keys are
//! known for certain: in the state machine, at apply, with the role the
//! command carries. The exactly-once cache is keyed by caller
//! (`service::Db::for_caller`), so one role cannot replay another's id
//! and read its answer.

use agenda_proto::db::{
    request_op, DeleteRequest, PutRequest, RangeRequest, TxnRequest, WatchRequest,
};

use agenda_common::registry;

use crate::state_machine::prefix_end;

/// What a request does to its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads (ranges, watches, compares).
    Read,
    /// Writes (puts, deletes).
    Write,
}

/// A half-open interval of keys; `end: None` has no upper bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Span {
    /// One key.
    pub fn key(key: &[u8]) -> Span {
        let mut end = key.to_vec();
        end.push(0);
        Span {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// What `(key, prefix, range_end)` selects, as the state machine reads
    /// it: a prefix, `[key, range_end)`, or one key.
    pub fn selection(key: &[u8], prefix: bool, range_end: &[u8]) -> Span {
        if prefix {
            Span {
                start: key.to_vec(),
                end: prefix_end(key),
            }
        } else if !range_end.is_empty() {
            Span {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        } else {
            Span::key(key)
        }
    }

    fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|e| *e <= self.start)
    }

    /// Whether the two share a key.
    fn meets(&self, other: &Span) -> bool {
        let before = |end: &Option<Vec<u8>>, start: &[u8]| {
            end.as_ref().is_some_and(|e| e.as_slice() <= start)
        };
        !self.is_empty()
            && !other.is_empty()
            && !before(&self.end, &other.start)
            && !before(&other.end, &self.start)
    }
}

/// One permission: every key under `prefix`, to read or also to write.
struct Grant {
    prefix: &'static str,
    write: bool,
}

const fn read(prefix: &'static str) -> Grant {
    Grant {
        prefix,
        write: false,
    }
}

const fn write(prefix: &'static str) -> Grant {
    Grant {
        prefix,
        write: true,
    }
}

const OPERATOR: &[Grant] = &[write("")];
// Routes, checks tokens (with the public keys in the registry), follows
// the Redis primary, the VIP lease and the session generations; appends
// failed logins to the audit log.
const GATEWAY: &[Grant] = &[read("/registry/"), read("/agenda/sessions/"), write(AUDIT)];

/// The audit log: appended to, never deleted by anyone (agenda-db keeps
/// the newest entries itself).
pub const AUDIT: &str = "/agenda/audit/";
// The only role that reads the private token keys (`/secrets/`).
const USERS: &[Grant] = &[
    write("/agenda/"),
    write("/secrets/jwt-keys"),
    write("/secrets/calendar-apps"),
    write("/registry/config/jwt-public-keys"),
    write("/registry/services/users/"),
    write(registry::NOTIFICATION_RELAY_ELECTION),
    read("/registry/"),
];
const GROUPS: &[Grant] = &[
    write("/agenda/"),
    write("/registry/services/groups/"),
    read("/registry/"),
];
const SUPERVISOR: &[Grant] = &[
    write(registry::REDIS_SUPERVISOR_ELECTION),
    write(registry::REDIS_PRIMARY),
    read("/registry/"),
];
const VIP: &[Grant] = &[write("/registry/vip/"), read("/registry/")];

/// The permissions of each role (`agendactl certs` names the roles). No
/// role but the operator holds `/`; raft peers and Redis hold nothing.
fn grants(role: &str) -> &'static [Grant] {
    match role {
        "operator" => OPERATOR,
        "gateway" => GATEWAY,
        "users" => USERS,
        "groups" => GROUPS,
        "supervisor" => SUPERVISOR,
        "vip" => VIP,
        _ => &[],
    }
}

/// Whether `role` may `access` every key of `span`.
pub fn allows(role: &str, span: &Span, access: Access) -> bool {
    if span.is_empty() {
        return true;
    }
    // The role's intervals for this access, by start.
    let mut spans: Vec<Span> = grants(role)
        .iter()
        .filter(|g| access == Access::Read || g.write)
        .map(|g| Span::selection(g.prefix.as_bytes(), true, b""))
        .collect();
    spans.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep: extend the covered stretch from the span's start.
    let mut covered_to = span.start.clone();
    for s in &spans {
        if s.start > covered_to {
            break;
        }
        match &s.end {
            None => return true,
            Some(end) if *end > covered_to => covered_to = end.clone(),
            Some(_) => {}
        }
        if span.end.as_ref().is_some_and(|e| covered_to >= *e) {
            return true;
        }
    }
    false
}

/// A request's keys and what it does to them.
pub enum Request<'a> {
    /// A read.
    Range(&'a RangeRequest),
    /// A write.
    Put(&'a PutRequest),
    /// A delete.
    Delete(&'a DeleteRequest),
    /// Every compare and every operation of both branches.
    Txn(&'a TxnRequest),
    /// A watch.
    Watch(&'a WatchRequest),
    /// A new lease (no keys yet): any role that may write something.
    LeaseGrant,
}

/// Refuses (with the reason) what `role` may not do.
pub fn check(role: &str, request: Request<'_>) -> Result<(), String> {
    let need = |span: Span, access: Access| {
        if allows(role, &span, access) {
            Ok(())
        } else {
            Err(format!(
                "the {role} role may not {} {}",
                match access {
                    Access::Read => "read",
                    Access::Write => "write",
                },
                describe(&span)
            ))
        }
    };
    match request {
        Request::Range(r) => need(
            Span::selection(&r.key, r.prefix, &r.range_end),
            Access::Read,
        ),
        Request::Put(p) => need(Span::key(&p.key), Access::Write),
        Request::Delete(d) => {
            let span = Span::selection(&d.key, d.prefix, b"");
            if span.meets(&Span::selection(AUDIT.as_bytes(), true, b"")) {
                return Err(format!(
                    "no role may delete audit entries ({} meets {AUDIT:?})",
                    describe(&span)
                ));
            }
            need(span, Access::Write)
        }
        Request::Watch(w) => need(Span::selection(&w.key, w.prefix, b""), Access::Read),
        Request::Txn(t) => {
            for c in &t.compare {
                need(Span::key(&c.key), Access::Read)?;
            }
            for op in t.success.iter().chain(&t.failure) {
                match &op.request {
                    Some(request_op::Request::Range(r)) => check(role, Request::Range(r))?,
                    Some(request_op::Request::Put(p)) => check(role, Request::Put(p))?,
                    Some(request_op::Request::Delete(d)) => check(role, Request::Delete(d))?,
                    None => {}
                }
            }
            Ok(())
        }
        Request::LeaseGrant => may_hold_leases(role),
    }
}

/// Any role that may write something may hold leases (to attach them to
/// what it writes). Renewing or revoking one is checked against its keys
/// when the state machine applies it (`StateMachine::lease_access`).
pub fn may_hold_leases(role: &str) -> Result<(), String> {
    if grants(role).iter().any(|g| g.write) {
        Ok(())
    } else {
        Err(format!("the {role} role may not hold leases"))
    }
}

fn describe(span: &Span) -> String {
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    match &span.end {
        Some(end) if *end == [span.start.as_slice(), &[0]].concat() => {
            format!("key {:?}", show(&span.start))
        }
        Some(end) => format!("keys [{:?}, {:?})", show(&span.start), show(end)),
        None => format!("keys from {:?} on", show(&span.start)),
    }
}

#[cfg(test)]
mod tests {
    use agenda_proto::db::{compare, Compare, RequestOp};

    use super::*;

    fn range(key: &str, prefix: bool, range_end: &str) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            prefix,
            range_end: range_end.into(),
            ..Default::default()
        }
    }

    fn put(key: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    /// No role deletes audit entries, not by key, prefix, a wider prefix
    /// or inside a transaction; the gateway appends them and reads the
    /// session generations, nothing else of /agenda/.
    #[test]
    fn audit_entries_are_never_deleted() {
        let del = |key: &str, prefix: bool| DeleteRequest {
            key: key.into(),
            prefix,
            ..Default::default()
        };
        for role in ["operator", "users", "groups", "gateway"] {
            for d in [
                del("/agenda/audit/0190", false),
                del("/agenda/audit/", true),
                del("/agenda/", true),
                del("", true),
            ] {
                let e = check(role, Request::Delete(&d)).expect_err(role);
                assert!(e.contains("audit"), "{e}");
                let txn = TxnRequest {
                    success: vec![RequestOp {
                        request: Some(request_op::Request::Delete(d.clone())),
                    }],
                    ..Default::default()
                };
                assert!(check(role, Request::Txn(&txn)).is_err(), "{role}");
            }
        }
        check("users", Request::Delete(&del("/agenda/events/x", false))).unwrap();
        check("operator", Request::Delete(&del("/agenda/auditx", false))).unwrap();
        check("gateway", Request::Put(&put("/agenda/audit/0190"))).unwrap();
        check(
            "gateway",
            Request::Range(&range("/agenda/sessions/", true, "")),
        )
        .unwrap();
        assert!(check("gateway", Request::Put(&put("/agenda/users/x"))).is_err());
        assert!(check(
            "gateway",
            Request::Range(&range("/agenda/users/", true, ""))
        )
        .is_err());
    }

    #[test]
    fn the_issues_reproduction_is_refused_role_by_role() {
        // Reading the signing keys, the password hashes and every event.
        let jwt = range("/secrets/jwt-keys", true, "");
        let users = range("/agenda/users/", true, "");
        for role in ["gateway", "groups", "supervisor", "vip", "peer", "redis"] {
            assert!(
                check(role, Request::Range(&jwt)).is_err(),
                "{role} read the private token keys"
            );
        }
        assert!(check("users", Request::Range(&jwt)).is_ok());
        let public = range("/registry/config/jwt-public-keys", false, "");
        assert!(
            check("gateway", Request::Range(&public)).is_ok(),
            "the gateway checks tokens with the public keys"
        );
        assert!(check("gateway", Request::Range(&users)).is_err());
        assert!(check("supervisor", Request::Range(&users)).is_err());
        assert!(check("vip", Request::Range(&users)).is_err());
        assert!(check("peer", Request::Range(&users)).is_err());
        assert!(check("redis", Request::Range(&jwt)).is_err());
        assert!(check("users", Request::Range(&users)).is_ok());
        assert!(check("operator", Request::Range(&users)).is_ok());
        // Replacing the signing keys (or the public ones the gateways
        // trust) or a password hash.
        for key in ["/secrets/jwt-keys", "/registry/config/jwt-public-keys"] {
            let key = put(key);
            assert!(check("gateway", Request::Put(&key)).is_err());
            assert!(check("groups", Request::Put(&key)).is_err());
            assert!(check("vip", Request::Put(&key)).is_err());
            assert!(check("users", Request::Put(&key)).is_ok());
        }
        assert!(check("gateway", Request::Put(&put("/agenda/users/alice"))).is_err());
        // Everything: only the operator.
        let all = range("", true, "");
        for role in [
            "gateway",
            "users",
            "groups",
            "supervisor",
            "vip",
            "peer",
            "redis",
        ] {
            assert!(
                check(role, Request::Range(&all)).is_err(),
                "{role} read everything"
            );
        }
        assert!(check("operator", Request::Range(&all)).is_ok());
        assert!(
            check("stranger", Request::Range(&jwt)).is_err(),
            "unknown roles hold nothing"
        );
    }

    #[test]
    fn an_interval_must_lie_wholly_inside_a_grant() {
        // [/registry/, /registry0) is all of /registry/; one byte past it is
        // not, nor an interval starting before it or running to the end.
        let gateway_reads = |key: &str, end: &str| {
            check("gateway", Request::Range(&range(key, false, end))).is_ok()
        };
        assert!(gateway_reads("/registry/", "/registry0"));
        assert!(!gateway_reads("/registry/", "/registry1"));
        assert!(!gateway_reads("/agenda/", "/registry/x"));
        assert!(!gateway_reads("/registry/z", "\u{7f}"));
        // Adjacent grants together cover an interval neither covers alone.
        assert!(allows(
            "users",
            &Span::selection(
                b"/registry/services/users/",
                false,
                b"/registry/services/users0"
            ),
            Access::Write
        ));
        assert!(!allows(
            "users",
            &Span::selection(b"/registry/services/", true, b""),
            Access::Write
        ));
    }

    #[test]
    fn a_txn_is_checked_compare_by_compare_and_in_both_branches() {
        let op = |p: PutRequest| RequestOp {
            request: Some(request_op::Request::Put(p)),
        };
        let own = TxnRequest {
            compare: vec![Compare {
                key: "/registry/vip/holder".into(),
                target: compare::Target::CreateRevision as i32,
                ..Default::default()
            }],
            success: vec![op(put("/registry/vip/holder"))],
            ..Default::default()
        };
        assert!(check("vip", Request::Txn(&own)).is_ok());
        // A forbidden write hidden in the failure branch.
        let mut sneaky = own.clone();
        sneaky.failure = vec![op(put("/registry/config/redis-primary"))];
        assert!(check("vip", Request::Txn(&sneaky)).is_err());
        // A compare that reads what the role may not.
        let mut peeking = own;
        peeking.compare.push(Compare {
            key: "/agenda/users/alice".into(),
            ..Default::default()
        });
        assert!(check("vip", Request::Txn(&peeking)).is_err());
    }

    #[test]
    fn watches_and_leases_follow_the_same_rules() {
        let w = |key: &str, prefix| WatchRequest {
            key: key.into(),
            prefix,
            ..Default::default()
        };
        assert!(check("gateway", Request::Watch(&w("/registry/services/", true))).is_ok());
        assert!(check("gateway", Request::Watch(&w("/agenda/", true))).is_err());
        assert!(
            check("redis", Request::LeaseGrant).is_err(),
            "it writes nothing"
        );
        assert!(check("vip", Request::LeaseGrant).is_ok());
        assert!(check("peer", Request::LeaseGrant).is_err());
    }

    #[test]
    fn refusals_name_the_role_and_the_keys() {
        let e = check("gateway", Request::Put(&put("/agenda/x"))).unwrap_err();
        assert_eq!(e, "the gateway role may not write key \"/agenda/x\"");
        let e = check("vip", Request::Range(&range("/agenda/", true, ""))).unwrap_err();
        assert_eq!(
            e,
            "the vip role may not read keys [\"/agenda/\", \"/agenda0\")"
        );
    }
}
