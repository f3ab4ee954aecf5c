//! The bounded chaos plan (one fault of each kind) in the two-machine
//! topology: nothing acknowledged lost or duplicated, the register
//! history linearizable, every notification delivered once, never two
//! VIP holders; time bounds at three times the targets (debug build on a
//! shared machine). `make chaos` runs the full plan on a release build.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

use agenda_tests::chaos;
use agenda_tests::topology::is_root;
use anyhow::{ensure, Result};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fault_of_each_kind_loses_nothing() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: the namespace topology needs root");
        return Ok(());
    }
    let report = chaos::run(chaos::quick_plan(), 3, false).await?;
    eprint!("{}", report.table());
    ensure!(
        report.violations.is_empty(),
        "violations:\n{}",
        report.violations.join("\n")
    );
    ensure!(
        report.slow.is_empty(),
        "over the time bounds:\n{}",
        report.slow.join("\n")
    );
    Ok(())
}
