//! A child process that is killed when its guard is dropped, on a failed run or a panic too.
//! Its stderr goes to a scratch file, shown when it dies early: a process that refused its
//! configuration says why.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, ChildStdin, Command};

use crate::proc_stats::{self, ProcStats};

/// A running child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    pid: u32,
    stderr: PathBuf,
    /// Scratch files of this process (its configuration), removed when it is dropped.
    files: Vec<PathBuf>,
    /// Never written: a child that reads its stdin sees it end when the driver dies, however
    /// it dies (the benchmark's echo upstream exits then).
    _stdin: Option<ChildStdin>,
}

impl Process {
    /// Starts `command` as `name`; `files` are removed when the process is dropped.
    pub fn spawn(name: &str, command: &mut Command, files: Vec<PathBuf>) -> Result<Self> {
        let stderr = scratch_file(name, "stderr");
        let log = std::fs::File::create(&stderr)
            .with_context(|| format!("create {}", stderr.display()))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        let pid = child.id().with_context(|| format!("{name} has no pid"))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            stderr,
            files,
            _stdin: stdin,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// An error, with what the process wrote to stderr, if it has exited (it crashed or
    /// refused its configuration).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            bail!("{} exited ({status}); its stderr:\n{log}", self.name);
        }
        Ok(())
    }

    /// Kills the process (as a crash would) and waits until it is gone.
    pub async fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("kill {}", self.name))
    }

    /// Sends `signal` (as `kill` takes it: `-STOP`, `-CONT`) to the process.
    pub async fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .await
            .context("run kill")?;
        if !status.success() {
            bail!("kill {signal} {} failed", self.pid);
        }
        Ok(())
    }

    /// Resident memory, open files and threads, from `/proc`.
    pub fn stats(&self) -> Result<ProcStats> {
        proc_stats::of(self.pid)
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss(&self) -> Result<u64> {
        proc_stats::rss_of(self.pid)
    }

    /// Peak resident set size since the process started (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        proc_stats::peak_rss_of(self.pid)
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        proc_stats::cpu_seconds_of(self.pid)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.stderr);
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A file of this process in the temporary directory, unique per call.
pub fn scratch_file(name: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "gatehouse-test-{}-{serial}-{name}.{extension}",
        std::process::id()
    ))
}
