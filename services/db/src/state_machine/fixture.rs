//! A state machine fed commands at consecutive indexes, and command
//! builders, for the unit tests of every part of the state machine.

use agenda_proto::db::{
    DeleteRequest, KeyValue, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
};
use agenda_proto::raft::{command, command_error, command_result, Command, CommandResult};

use super::{Effects, StateMachine};

pub(super) struct Fixture {
    pub(super) sm: StateMachine,
    index: u64,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Fixture {
            sm: StateMachine::new(1000),
            index: 0,
        }
    }

    pub(super) fn apply(&mut self, id: &str, op: command::Op) -> (CommandResult, Effects) {
        self.apply_at(id, op, 1_000_000)
    }

    pub(super) fn apply_at(
        &mut self,
        id: &str,
        op: command::Op,
        at_ms: u64,
    ) -> (CommandResult, Effects) {
        self.apply_as("", id, op, at_ms)
    }

    pub(super) fn apply_as(
        &mut self,
        role: &str,
        id: &str,
        op: command::Op,
        at_ms: u64,
    ) -> (CommandResult, Effects) {
        self.index += 1;
        let cmd = Command {
            request_id: id.into(),
            proposed_at_ms: at_ms,
            caller_role: role.into(),
            op: Some(op),
        };
        self.sm.apply(self.index, 1, 1, &cmd).unwrap()
    }

    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.sm.get(key.as_bytes()).cloned()
    }
}

pub(super) fn put(key: &str, value: &str) -> command::Op {
    command::Op::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

pub(super) fn delete(key: &str) -> command::Op {
    command::Op::Delete(DeleteRequest {
        key: key.into(),
        ..Default::default()
    })
}

pub(super) fn grant(id: i64, ttl: i64) -> command::Op {
    command::Op::LeaseGrant(LeaseGrantRequest {
        id,
        ttl,
        ..Default::default()
    })
}

pub(super) fn revoke(id: i64) -> command::Op {
    command::Op::LeaseRevoke(LeaseRevokeRequest {
        id,
        ..Default::default()
    })
}

pub(super) fn error_code(r: &CommandResult) -> Option<command_error::Code> {
    match &r.result {
        Some(command_result::Result::Error(e)) => command_error::Code::try_from(e.code).ok(),
        _ => None,
    }
}
