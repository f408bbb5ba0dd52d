//! For `fleetlog bench alert --kill-leader`: finds the local process serving the leader's
//! address, kills it (SIGKILL) and starts it again the same way, so a bench can time a decision
//! across a failover on a cluster of local processes (`benches/cluster.sh up`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use anyhow::{bail, Context, Result};

/// A `fleetlog serve` process found by the address it listens on, as it was started.
pub struct ServeProcess {
    pid: i32,
    arguments: Vec<String>,
    directory: PathBuf,
}

impl ServeProcess {
    /// The process whose command line has `serve` and `--listen ADDRESS`.
    pub fn find(address: &str) -> Result<ServeProcess> {
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let arguments: Vec<String> = raw
                .split(|byte| *byte == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            let listens = arguments.windows(2).any(|pair| pair[0] == "--listen" && pair[1] == address);
            if listens && arguments.iter().any(|argument| argument == "serve") {
                let directory = std::fs::read_link(entry.path().join("cwd")).context("reading its directory")?;
                return Ok(ServeProcess { pid, arguments, directory });
            }
        }
        bail!("no local `fleetlog serve --listen {address}` process (--kill-leader needs the cluster on this machine)")
    }

    pub fn kill(&self) {
        // SAFETY: sends a signal to a process id; touches no memory.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    /// Starts the process again with the same arguments, in its own process group, detached.
    pub fn restart(&self) -> Result<()> {
        // Its data directory is locked until the killed process is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::process::Command::new(&self.arguments[0])
            .args(&self.arguments[1..])
            .current_dir(&self.directory)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("restarting {:?}", self.arguments))?;
        Ok(())
    }
}
