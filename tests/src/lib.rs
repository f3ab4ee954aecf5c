//! System tests and benchmarks of Agenda: real processes, real disks.
//!
//! Layout:
//! - [`cluster`]: start, kill, restart and join agenda-db processes on
//!   loopback; poll-with-deadline helpers.
//! - [`linearizability`]: a Wing–Gong/Lowe checker for a register with
//!   compare-and-set, fed by histories recorded in the tests.
//! - [`register`]: a register client of one agenda-db key whose
//!   histories the checker reads.
//! - [`sim`]: agenda-db's raft loop simulated in one thread, by seed
//!   (`make sim`).
//! - [`scenario`]: fault scenarios written once, run by the simulator
//!   and by the real-process cluster test.
//! - [`etcd`]: a real etcd cluster, the yardstick of the benchmark.
//! - [`system`]: the whole system (db, users, groups, gateway) and a small
//!   client of the public HTTP API.
//! - [`ws`]: a client of the WebSocket stream.
//! - [`redis`]: two `agenda-supervisor`s, each owning a real
//!   redis-server (the Redis layer of the messaging tests).
//! - [`child`]: outside programs (schemathesis, calendar-app clients) in
//!   process groups of their own, waited on with deadlines.
//! - [`chaos`]: faults under traffic with history checks (`make chaos`).
//! - [`topology`]: the two-machine topology in network namespaces
//!   (`deploy/netns.sh`), for the VIP tests and `make chaos`.
//! - `tests/`: the system tests; `src/bin/bench_db.rs`: `make bench-db`.

pub mod chaos;
pub mod child;
pub mod cluster;
pub mod etcd;
pub mod linearizability;
pub mod redis;
pub mod register;
pub mod scenario;
pub mod sim;
pub mod system;
pub mod topology;
pub mod ws;
