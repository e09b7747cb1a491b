//! One child process: started in its own process group with a parent-death signal, reaped by a
//! task of its own, its stderr kept (last lines) to say why it died, and signalled only through a
//! pidfd — never through a bare pid, which the kernel may have given to another process once this
//! one was reaped.

use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tracing::debug;

/// Lines of a worker's stderr kept to explain its exit.
const STDERR_TAIL: usize = 5;

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr_tail: Vec<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => {
                let name = Signal::try_from(s).map(|s| s.as_str()).unwrap_or("?");
                write!(f, "killed by signal {s} ({name})")?
            }
            (Some(c), _) => write!(f, "exited with code {c}")?,
            _ => write!(f, "exited")?,
        }
        if let Some(last) = self.stderr_tail.last() {
            write!(f, "; last stderr line: {last}")?;
        }
        Ok(())
    }
}

/// A process file descriptor: it names one process for as long as it is open, so a signal sent
/// through it can never reach a process that later got the same pid.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for a child we have not reaped yet (so the pid is still ours).
    fn open(pid: u32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; no memory is
        // passed to the kernel.
        let fd =
            unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor the kernel just opened for us and nothing else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Sends `sig`; false when the process is gone (already reaped: nothing else is signalled).
    pub fn signal(&self, sig: Signal) -> bool {
        // SAFETY: pidfd_send_signal takes our open descriptor, a signal number, a null siginfo
        // (allowed: the kernel fills in a default) and flags 0.
        let r = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig as i32,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0u32,
            )
        };
        r == 0
    }
}

/// A started child: its pid (for display), its pidfd (for signals) and its exit, once reaped.
#[derive(Debug, Clone)]
pub struct ChildProcess {
    pub pid: u32,
    pub pidfd: Arc<PidFd>,
    pub exit: watch::Receiver<Option<ExitInfo>>,
}

impl ChildProcess {
    /// Starts `cmd` with stderr piped, in its own process group, dying with this process.
    pub fn start(mut cmd: tokio::process::Command, label: &str) -> std::io::Result<ChildProcess> {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // The parent may have died between fork and prctl: then do not run at all.
                if nix::unistd::getppid().as_raw() != parent {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        // Opened before the reaper task exists, so the pid cannot have been reused yet.
        let pidfd = match PidFd::open(pid) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                let _ = child.start_kill();
                return Err(e);
            }
        };
        let (exit_tx, exit) = watch::channel(None);
        let tail = child
            .stderr
            .take()
            .map(|e| keep_stderr_tail(e, label.to_owned(), pid));
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().await;
            debug!(pid, ?status, "worker reaped");
            // The last stderr lines say why it died: wait for the pipe's EOF (bounded, in case a
            // grandchild still holds it open).
            let stderr_tail = match tail {
                Some(t) => tokio::time::timeout(Duration::from_millis(100), t)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let (code, signal) = status.map_or((None, None), |s| (s.code(), s.signal()));
            let _ = exit_tx.send(Some(ExitInfo {
                code,
                signal,
                stderr_tail,
            }));
        });
        Ok(ChildProcess { pid, pidfd, exit })
    }

    pub fn signal(&self, sig: Signal) {
        self.pidfd.signal(sig);
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Waits for the process to be reaped.
    pub async fn wait_exit(&mut self) -> ExitInfo {
        let unknown = ExitInfo {
            code: None,
            signal: None,
            stderr_tail: vec![],
        };
        match self.exit.wait_for(Option::is_some).await {
            Ok(e) => e.clone().unwrap_or(unknown),
            Err(_) => unknown,
        }
    }
}

/// Logs a worker's stderr at debug level and returns its last lines once the pipe closes.
fn keep_stderr_tail(
    stderr: tokio::process::ChildStderr,
    label: String,
    pid: u32,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut tail = VecDeque::with_capacity(STDERR_TAIL);
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            debug!(worker = %label, pid, "{line}");
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(300).collect());
        }
        tail.into()
    })
}
