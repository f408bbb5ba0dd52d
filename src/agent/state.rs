//! What an agent remembers across restarts, in one JSON file written atomically (temporary
//! file, fsync, rename, fsync of the directory): a crash leaves either the old state or the new.
//! The rules of the state itself live in [`fleetlog_raft::domain::agent_state`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use fleetlog_raft::domain::agent_state::{AgentState, Applied, Directive, Outcome, SaidHealth};

/// The state file of one agent.
pub struct StateFile {
    path: PathBuf,
    directory: PathBuf,
}

impl StateFile {
    pub fn new(directory: &Path) -> Result<StateFile> {
        fs::create_dir_all(directory)
            .with_context(|| format!("cannot create the state directory {}", directory.display()))?;
        Ok(StateFile { path: directory.join("state.json"), directory: directory.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or a fresh one. A state saved for another host, service or env is an
    /// error: sharing a directory would make two agents skip each other's directives.
    pub fn load(&self, host: &str, service: &str, env: &str) -> Result<AgentState> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(AgentState::new(host, service, env))
            }
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", self.path.display())),
        };
        let mut state: AgentState =
            serde_json::from_slice(&text).with_context(|| format!("{} is not an agent state", self.path.display()))?;
        if (state.host.as_str(), state.service.as_str(), state.env.as_str()) != (host, service, env) {
            bail!(
                "{} belongs to host {} of {}/{}; give each agent its own --state-dir",
                self.path.display(),
                state.host,
                state.service,
                state.env
            );
        }
        state.resume_failed();
        Ok(state)
    }

    pub fn save(&self, state: &AgentState) -> Result<()> {
        let temporary = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(state)?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temporary, &self.path)?;
            fs::File::open(&self.directory)?.sync_all()
        };
        write().with_context(|| format!("cannot save {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn directive(seq: u64, release: &str) -> Directive {
        Directive { seq, release: release.into(), cause: "wave.started".into(), deployment: None }
    }

    #[test]
    fn a_restart_after_a_failed_install_retries_at_once() {
        let directory = tempfile::tempdir().unwrap();
        let file = StateFile::new(directory.path()).unwrap();
        let (now, later) = (Instant::now(), Instant::now() + Duration::from_secs(3600));
        let mut state = file.load("h", "s", "e").unwrap();
        state.take(5, Some(directive(5, "1.1")));
        assert_eq!(state.due(now), Some(&directive(5, "1.1")));
        assert_eq!(state.start(), 1);
        assert_eq!(state.due(now), None, "not while its command runs");
        assert_eq!(state.finish(directive(5, "1.1"), Outcome::Failed), Some(1));
        state.defer(later);
        file.save(&state).unwrap();
        assert_eq!((state.due(now), state.retry_at()), (None, Some(later)));
        assert_eq!(state.due(later), Some(&directive(5, "1.1")));

        let mut restarted = file.load("h", "s", "e").unwrap();
        assert_eq!((restarted.retry_at(), restarted.attempts), (None, 1));
        assert_eq!(restarted.due(now), Some(&directive(5, "1.1")), "a restart retries at once");
        assert_eq!(restarted.start(), 2);
        assert_eq!(restarted.finish(directive(5, "1.1"), Outcome::Running), None);
        assert_eq!((restarted.pending(), restarted.attempts), (None, 0));
    }

    /// A state saved by an agent that did not retry (the failed directive applied, no target)
    /// is loaded with the failed directive as the target, due at once as a second attempt.
    #[test]
    fn a_failure_saved_before_retries_existed_is_retried() {
        let directory = tempfile::tempdir().unwrap();
        let file = StateFile::new(directory.path()).unwrap();
        let old = serde_json::json!({"host": "h", "service": "s", "env": "e", "position": 9,
            "current": {"directive": directive(9, "1.1"), "outcome": "failed"}, "target": null, "attempts": 0});
        fs::write(file.path(), old.to_string()).unwrap();
        let mut state = file.load("h", "s", "e").unwrap();
        assert_eq!(state.due(Instant::now()), Some(&directive(9, "1.1")));
        assert_eq!(state.start(), 2);
    }

    #[test]
    fn saves_atomically_and_refuses_another_agents_file() {
        let directory = tempfile::tempdir().unwrap();
        let file = StateFile::new(directory.path()).unwrap();
        let mut state = file.load("h", "s", "e").unwrap();
        state.take(3, Some(directive(3, "1.1")));
        file.save(&state).unwrap();
        assert_eq!(file.load("h", "s", "e").unwrap(), state);
        assert!(file.load("other", "s", "e").is_err());
        assert!(!directory.path().join("state.json.tmp").exists());
    }
}
