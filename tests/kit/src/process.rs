//! A child process that is killed when its guard is dropped, on a failed run or a panic too.
//! Its output (stdout and stderr) goes to a scratch file, shown when it dies early: a process
//! that refused its configuration or found its port taken says so.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::process::{Child, ChildStdin, Command};

use crate::proc_stats::{self, ProcStats};

/// How often [`Process::wait_ready`] looks.
const POLL: Duration = Duration::from_millis(20);

/// A running child process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    pid: u32,
    /// Its stdout and stderr (Redis logs to stdout, the planes report errors on stderr).
    output: PathBuf,
    /// Scratch files of this process (its configuration), removed when it is dropped.
    files: Vec<PathBuf>,
    /// Never written: a child that reads its stdin sees it end when the driver dies, however
    /// it dies (the benchmark's echo upstream exits then).
    _stdin: Option<ChildStdin>,
}

impl Process {
    /// Starts `command` as `name`; `files` are removed when the process is dropped.
    pub fn spawn(name: &str, command: &mut Command, files: Vec<PathBuf>) -> Result<Self> {
        let output = scratch_file(name, "log");
        let log = std::fs::File::create(&output)
            .with_context(|| format!("create {}", output.display()))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("share the output file")?)
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
            output,
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

    /// An [`Exited`] error, with what the process wrote, if it has exited (it crashed,
    /// refused its configuration, or found a port taken).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(Exited {
                name: self.name.clone(),
                status,
                output: std::fs::read_to_string(&self.output).unwrap_or_default(),
            }
            .into());
        }
        Ok(())
    }

    /// Whether this process itself listens on loopback `port`.
    pub fn listens_on(&self, port: u16) -> bool {
        proc_stats::listening_ports(self.pid).contains(&port)
    }

    /// Waits, for at most `deadline`, until the process listens on every one of `ports` and
    /// then `ready` answers true: an answer on a port someone else took is not the process
    /// being ready. An [`Exited`] error as soon as the process exits meanwhile.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        ports: &[u16],
        deadline: Duration,
        mut ready: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            self.check_running()?;
            if ports.iter().all(|port| self.listens_on(*port)) && ready().await {
                return Ok(());
            }
            if started.elapsed() > deadline {
                bail!("timed out after {deadline:?} waiting for {what}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the process has written so far, stdout and stderr interleaved.
    pub fn output(&self) -> Result<String> {
        std::fs::read_to_string(&self.output)
            .with_context(|| format!("read the output of {}", self.name))
    }

    /// Sends SIGTERM and waits, for at most `grace`, until the process has exited.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal("-TERM").await?;
        tokio::time::timeout(grace, self.child.wait())
            .await
            .with_context(|| format!("{} still runs {grace:?} after SIGTERM", self.name))?
            .with_context(|| format!("wait for {}", self.name))
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
        let _ = std::fs::remove_file(&self.output);
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A process that ended before it was stopped, with what it wrote.
#[derive(Debug)]
pub struct Exited {
    pub name: String,
    pub status: ExitStatus,
    pub output: String,
}

impl Exited {
    /// Whether it says it could not bind a port because another process held it. Every
    /// program started here words it with strerror(EADDRINUSE): redis-server and
    /// redis-sentinel ("bind: Address already in use"), the planes ("cannot listen on ...:
    /// Address already in use (os error 98)"), nginx, and Go's "address already in use".
    pub fn port_taken(&self) -> bool {
        self.output
            .to_ascii_lowercase()
            .contains("address already in use")
    }
}

impl fmt::Display for Exited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} exited ({}); its output:\n{}",
            self.name, self.status, self.output
        )
    }
}

impl std::error::Error for Exited {}

/// A file of this process in the temporary directory, unique per call.
pub fn scratch_file(name: &str, extension: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let serial = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "gatehouse-test-{}-{serial}-{name}.{extension}",
        std::process::id()
    ))
}
