//! Outside programs the system tests run (schemathesis, the calendar-app
//! clients): each in a process group of its own, waited on with a
//! deadline and killed as a group (with whatever it started) when the
//! deadline passes, on failure or when dropped.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child in a process group of its own, killed as a group when dropped.
pub struct Group {
    child: Child,
}

impl Group {
    /// Starts `cmd` (no standard input) as the leader of a new process
    /// group; panics when it cannot be started.
    pub fn spawn(cmd: &mut Command) -> Group {
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Group { child }
    }

    /// Waits for the exit; `None` when `deadline` passed (then the group
    /// is killed).
    pub async fn wait(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for the child") {
                return Some(st);
            }
            if Instant::now() >= end {
                self.kill();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM to the group, up to 5 s for the leader to exit, then
    /// SIGKILL to whatever is left of the group.
    pub fn kill(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal, to the group this child leads.
        unsafe {
            libc::killpg(pgid, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.kill();
        } else {
            // The leader is gone; anything it left in the group goes too.
            // SAFETY: a signal to this child's group only.
            unsafe {
                libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `script setup` (a `run.sh` that makes a tool's virtualenvs: exit
/// 3 when no virtualenv can be made, 4 when pip fails), its output in
/// `log`, within `deadline`; panics saying what to install, naming `tools`.
pub async fn venv_setup(script: &Path, log: &Path, deadline: Duration, tools: &str) {
    let out = std::fs::File::create(log).expect("setup log");
    let mut group = Group::spawn(
        Command::new("bash")
            .arg(script)
            .arg("setup")
            .stdout(out.try_clone().expect("log"))
            .stderr(out),
    );
    let status = group.wait(deadline).await;
    let said = tail(log, 20);
    let script = script.display();
    match status.and_then(|s| s.code()) {
        Some(0) => {}
        Some(3) => panic!(
            "{tools} need a Python virtualenv and none can be made here: install \
             python3-venv (apt-get install -y python3-venv; .ci/run does)\n{said}"
        ),
        Some(4) => panic!("pip could not install {tools} (PyPI unreachable?)\n{said}"),
        Some(code) => panic!("{script} setup failed ({code})\n{said}"),
        None => panic!("{script} setup took over {deadline:?}\n{said}"),
    }
}
