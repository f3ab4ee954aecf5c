//! Fault scenarios for agenda-db, written once and run twice: by the
//! simulator over virtual time ([`crate::sim::run_scenario`]) and by the
//! real-process cluster test (`tests/tests/db_cluster.rs`: kill -9,
//! SIGSTOP and SIGCONT on real nodes). Both drive the same register
//! workload ([`crate::register::cas_txn`] and its reads and writes) and
//! judge its history with the same [`crate::linearizability`] checker,
//! so a scenario that passes in the simulation and fails on real
//! processes points at what the simulation does not model.

/// Which node a step acts on, chosen when the step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node the cluster follows now.
    Leader,
    /// A running node that is not the leader (the lowest id).
    Follower,
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Let the workload complete this many more operations (a step that
    /// cannot is a failure: the cluster stopped serving).
    Ops(usize),
    /// Kill a node at once (kill -9; in the simulation a crash that loses
    /// what was not fsynced).
    Kill(Target),
    /// Freeze a node (SIGSTOP; in the simulation cut off from every
    /// other): it neither answers nor notices time pass.
    Freeze(Target),
    /// Thaw every frozen node.
    Thaw,
    /// Start every killed node again from its disk.
    RestartAll,
}

/// A named list of steps.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// What it shows, for test names and logs.
    pub name: &'static str,
    /// What happens, in order.
    pub steps: &'static [Step],
}

use Step::*;
use Target::*;

/// The scenarios both runners run.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "the leader killed twice under load",
        steps: &[
            Ops(300),
            Kill(Leader),
            Ops(300),
            RestartAll,
            Ops(300),
            Kill(Leader),
            Ops(300),
            RestartAll,
            Ops(100),
        ],
    },
    Scenario {
        name: "the leader frozen, then thawed into a newer term",
        steps: &[Ops(200), Freeze(Leader), Ops(300), Thaw, Ops(300)],
    },
    Scenario {
        name: "two followers killed and restarted, then the leader frozen",
        steps: &[
            Ops(200),
            Kill(Follower),
            Kill(Follower),
            Ops(200),
            RestartAll,
            Ops(200),
            Freeze(Leader),
            Ops(200),
            Thaw,
            Ops(100),
        ],
    },
];

/// The scenario called `name`.
pub fn named(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}
