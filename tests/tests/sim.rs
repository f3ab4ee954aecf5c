//! The simulated agenda-db cluster in `make test`: a bounded sweep of
//! seeds (debug build, about a minute; `make sim` runs a thousand on a
//! release build), and proof that it finds the defects this project had,
//! put back behind `Reintroduced` (and one in the election's rules).

use std::time::Duration;

use agenda_db::node::Reintroduced;
use agenda_tests::sim::{self, SimConfig};

fn cfg(reintroduced: Reintroduced) -> SimConfig {
    SimConfig {
        duration: Duration::from_secs(10),
        reintroduced,
        ..SimConfig::default()
    }
}

#[test]
fn a_sweep_of_seeds_finds_nothing() {
    for seed in 1..=12 {
        let r = sim::run(seed, &cfg(Reintroduced::default()));
        assert!(
            r.violation.is_none(),
            "seed {seed}: {} (replay: make sim SEED={seed})",
            r.violation.unwrap()
        );
        assert!(r.ops_checked > 100, "seed {seed} checked too little: {r:?}");
        assert!(r.elections > 0, "seed {seed} elected no one: {r:?}");
        assert!(
            r.lease_reads > 0,
            "seed {seed}: no read was answered under a leader's lease: {r:?}"
        );
    }
}

/// The first seed, within `limit`, that catches `bug`.
fn caught(bug: Reintroduced, limit: u64) -> Option<(u64, String)> {
    (1..=limit).find_map(|seed| sim::run(seed, &cfg(bug)).violation.map(|v| (seed, v)))
}

#[test]
fn acknowledging_before_the_fsync_is_caught() {
    let bug = Reintroduced {
        ack_before_fsync: true,
        ..Default::default()
    };
    let found = caught(bug, 40);
    assert!(
        found.is_some(),
        "40 seeds missed acknowledgements before the fsync"
    );
    println!("ack before fsync caught: {found:?}");
}

#[test]
fn the_local_clock_in_apply_is_caught() {
    let bug = Reintroduced {
        local_clock_in_apply: true,
        ..Default::default()
    };
    let found = caught(bug, 20);
    assert!(found.is_some(), "20 seeds missed the local clock in apply");
    println!("local clock in apply caught: {found:?}");
}

/// A leader frozen (cut off, its ticks stopped) keeps answering the
/// reads put to it while its lease lasts; with a lease longer than an
/// election timeout it answers them after the others elected a new leader
/// and wrote: stale reads, which the checker must see.
#[test]
fn a_frozen_leader_reading_past_a_too_long_lease_is_caught() {
    let bug = Reintroduced {
        long_read_lease: true,
        ..Default::default()
    };
    let frozen = agenda_tests::scenario::named("the leader frozen, then thawed into a newer term")
        .expect("the scenario");
    let found = (1..=5).find_map(|seed| {
        sim::run_scenario(seed, &cfg(bug), frozen)
            .violation
            .map(|v| (seed, v))
    });
    assert!(
        found
            .as_ref()
            .is_some_and(|(_, v)| v.contains("not linearizable")),
        "5 seeds missed a frozen leader reading past its lease: {found:?}"
    );
    println!("long read lease caught: {found:?}");
}

#[test]
fn an_election_leader_acting_past_its_deadline_is_caught() {
    let found = (1..=60).find_map(|seed| {
        let cfg = SimConfig {
            election_ignores_deadline: true,
            ..cfg(Reintroduced::default())
        };
        sim::run(seed, &cfg).violation.map(|v| (seed, v))
    });
    assert!(
        found
            .as_ref()
            .is_some_and(|(_, v)| v.contains("two holders")),
        "60 seeds missed a leader acting past its lease: {found:?}"
    );
    println!("election ignoring its deadline caught: {found:?}");
}

/// The scenarios the real-process cluster test runs
/// (`db_cluster::the_shared_scenarios_keep_histories_linearizable`), here
/// over virtual time, a few seeds each.
#[test]
fn the_shared_scenarios_pass_in_the_simulation() {
    for scenario in agenda_tests::scenario::SCENARIOS {
        for seed in 1..=3 {
            let r = sim::run_scenario(seed, &cfg(Reintroduced::default()), scenario);
            assert!(
                r.violation.is_none(),
                "{} (seed {seed}): {} (replay: make sim SEED={seed} SIM_ARGS='--scenario \"{}\"')",
                scenario.name,
                r.violation.unwrap(),
                scenario.name
            );
            assert!(r.ops_checked > 1000, "{}: {r:?}", scenario.name);
        }
    }
}
