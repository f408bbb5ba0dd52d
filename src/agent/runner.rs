//! Runs the agent's command for one directive: `sh -c CMD` with the directive in `FLEETLOG_*`
//! variables, its output kept as a bounded tail for the report.

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::agent::state::{Directive, Outcome};

/// Bytes of output kept for the report (the ledger's message limit is 4,096 characters).
pub const OUTPUT_TAIL_BYTES: usize = 2_048;

pub struct Finished {
    pub outcome: Outcome,
    /// Exit status and the last lines of stdout and stderr, interleaved as they came.
    pub message: String,
    pub elapsed: Duration,
}

pub struct Runner {
    pub command: String,
    pub host: String,
    pub service: String,
    pub env: String,
    pub timeout: Duration,
}

impl Runner {
    pub async fn run(&self, directive: &Directive) -> Finished {
        let started = Instant::now();
        let (outcome, message) = match self.execute(directive).await {
            Ok(result) => result,
            Err(error) => (Outcome::Failed, format!("cannot run the command: {error}")),
        };
        Finished { outcome, message, elapsed: started.elapsed() }
    }

    async fn execute(&self, directive: &Directive) -> std::io::Result<(Outcome, String)> {
        let variables = [
            ("FLEETLOG_SERVICE", self.service.clone()),
            ("FLEETLOG_ENV", self.env.clone()),
            ("FLEETLOG_HOST", self.host.clone()),
            ("FLEETLOG_RELEASE", directive.release.clone()),
            ("FLEETLOG_SEQ", directive.seq.to_string()),
            ("FLEETLOG_CAUSE", directive.cause.clone()),
            ("FLEETLOG_DEPLOYMENT", directive.deployment.clone().unwrap_or_default()),
        ];
        shell(&self.command, &variables, self.timeout).await
    }
}

/// Runs `sh -c command` with `variables` set, for at most `timeout`: success (exit 0) and a
/// message with the exit status and the tail of the output.
pub async fn shell(
    command_text: &str,
    variables: &[(&str, String)],
    timeout: Duration,
) -> std::io::Result<(Outcome, String)> {
    let mut command = Command::new("sh");
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // If the agent dies (even by SIGKILL), the shell running the command dies too, so
            // a restarted agent never runs a directive alongside an orphan of its last life.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.arg("-c").arg(command_text).envs(variables.iter().map(|(name, value)| (*name, value)));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout stops everything the command started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(Tail::default()));
    let stdout = tokio::spawn(collect(child.stdout.take(), tail.clone()));
    let stderr = tokio::spawn(collect(child.stderr.take(), tail.clone()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => {
            if let Some(pid) = child.id() {
                // SAFETY: signalling a process group we created; no memory is involved.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            let _ = child.wait().await;
            None
        }
    };
    // The pipes close when the command and everything it started are gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stdout.await;
        let _ = stderr.await;
    })
    .await;
    let output = tail.lock().map(|tail| tail.text()).unwrap_or_default();
    let (outcome, summary) = match status {
        Some(status) if status.success() => (Outcome::Running, "exit 0".to_string()),
        Some(status) => (Outcome::Failed, format!("{status}")),
        None => (Outcome::Failed, format!("timed out after {timeout:?}")),
    };
    let message = if output.is_empty() { summary } else { format!("{summary}\n{output}") };
    Ok((outcome, message))
}

/// The last [`OUTPUT_TAIL_BYTES`] bytes of output.
#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        let excess = self.bytes.len().saturating_sub(OUTPUT_TAIL_BYTES);
        self.bytes.drain(..excess);
    }

    fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim_end().to_string()
    }
}

async fn collect(pipe: Option<impl AsyncRead + Unpin>, tail: std::sync::Arc<std::sync::Mutex<Tail>>) {
    let Some(mut pipe) = pipe else { return };
    let mut buffer = [0u8; 4096];
    while let Ok(read) = pipe.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        if let Ok(mut tail) = tail.lock() {
            tail.push(&buffer[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(command: &str, timeout: Duration) -> Runner {
        Runner {
            command: command.into(),
            host: "web-1".into(),
            service: "checkout".into(),
            env: "prod".into(),
            timeout,
        }
    }

    fn directive() -> Directive {
        Directive { seq: 42, release: "1.4.2".into(), cause: "rollback".into(), deployment: None }
    }

    #[tokio::test]
    async fn passes_the_directive_and_keeps_the_output() {
        let command =
            "echo $FLEETLOG_SERVICE/$FLEETLOG_ENV $FLEETLOG_RELEASE $FLEETLOG_SEQ $FLEETLOG_CAUSE $FLEETLOG_HOST";
        let finished = runner(command, Duration::from_secs(10)).run(&directive()).await;
        assert_eq!(finished.outcome, Outcome::Running);
        assert_eq!(finished.message, "exit 0\ncheckout/prod 1.4.2 42 rollback web-1");
    }

    #[tokio::test]
    async fn a_failing_command_reports_its_status_and_output_tail() {
        let command = "seq 1 5000; echo broken >&2; exit 3";
        let finished = runner(command, Duration::from_secs(10)).run(&directive()).await;
        assert_eq!(finished.outcome, Outcome::Failed);
        assert!(finished.message.starts_with("exit status: 3"), "{}", finished.message);
        assert!(finished.message.ends_with("broken"), "{}", finished.message);
        assert!(finished.message.len() <= OUTPUT_TAIL_BYTES + 32);
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_its_children() {
        let finished = runner("sleep 30 & sleep 30", Duration::from_millis(200)).run(&directive()).await;
        assert_eq!(finished.outcome, Outcome::Failed);
        assert!(finished.message.starts_with("timed out"), "{}", finished.message);
        assert!(finished.elapsed < Duration::from_secs(5));
    }
}
