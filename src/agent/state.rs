//! What an agent remembers across restarts, in one JSON file written atomically (temporary
//! file, fsync, rename, fsync of the directory): a crash leaves either the old state or the new.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A change of this host's desired release, as the watch stream announced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub seq: u64,
    pub release: String,
    pub cause: String,
    pub deployment: Option<String>,
}

/// How the last completed directive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Running,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Failed => "failed",
        }
    }
}

/// The last directive whose command finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub directive: Directive,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub host: String,
    pub service: String,
    pub env: String,
    /// Seq of the last watch message taken in; the stream resumes after it.
    pub position: u64,
    /// What this host runs: the last directive applied, successfully or not.
    pub current: Option<Applied>,
    /// The newest directive not yet applied. Only ever replaced by a newer one.
    pub target: Option<Directive>,
    /// Times the command has been started for `target`; a start interrupted by a crash counts.
    /// Zero: the target has not been started.
    pub attempts: u32,
}

impl AgentState {
    pub fn new(host: &str, service: &str, env: &str) -> AgentState {
        AgentState {
            host: host.to_string(),
            service: service.to_string(),
            env: env.to_string(),
            position: 0,
            current: None,
            target: None,
            attempts: 0,
        }
    }

    /// The seq of the newest directive this agent knows of, applied or not.
    fn newest_seq(&self) -> u64 {
        let current = self.current.as_ref().map_or(0, |applied| applied.directive.seq);
        let target = self.target.as_ref().map_or(0, |directive| directive.seq);
        current.max(target)
    }

    /// Takes in a desired release announced at `position`. The newest directive wins: one the
    /// stream already passed is ignored; a newer one replaces the target. A command already
    /// started for the target is not interrupted: the newer directive is applied after it, unless
    /// it asks for the release that command installs. A target not started yet is dropped when
    /// the newer directive asks for what already runs. Returns whether anything changed.
    pub fn take(&mut self, position: u64, directive: Option<Directive>) -> bool {
        let mut changed = false;
        if let Some(directive) = directive {
            let fresh = directive.seq > self.newest_seq() && (self.position == 0 || directive.seq > self.position);
            if fresh {
                let installed = match &self.target {
                    Some(target) if self.attempts > 0 => Some(target.release.as_str()),
                    _ => self.current.as_ref().map(|applied| applied.directive.release.as_str()),
                };
                if installed == Some(directive.release.as_str()) {
                    // Nothing new to install; a pending target that was never started is moot.
                    if self.target.is_some() && self.attempts == 0 {
                        self.target = None;
                        changed = true;
                    }
                } else {
                    self.target = Some(directive);
                    self.attempts = 0;
                    changed = true;
                }
            }
        }
        if position > self.position {
            self.position = position;
            changed = true;
        }
        changed
    }

    /// Records that the command for the target started (saved before it runs).
    pub fn start(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    /// The directive to apply next, if any.
    pub fn pending(&self) -> Option<&Directive> {
        self.target.as_ref()
    }

    /// Records that `directive`'s command finished. The target is cleared unless a newer
    /// directive replaced it meanwhile.
    pub fn finish(&mut self, directive: Directive, outcome: Outcome) {
        if self.target.as_ref() == Some(&directive) {
            self.target = None;
            self.attempts = 0;
        }
        self.current = Some(Applied { directive, outcome });
    }
}

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
        let state: AgentState =
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
    use super::*;

    fn directive(seq: u64, release: &str) -> Directive {
        Directive { seq, release: release.into(), cause: "wave.started".into(), deployment: None }
    }

    #[test]
    fn newest_directive_wins_and_older_ones_are_ignored() {
        let mut state = AgentState::new("h", "s", "e");
        assert!(state.take(5, Some(directive(5, "1.1"))));
        assert!(state.take(9, Some(directive(9, "1.0"))));
        assert_eq!(state.pending(), Some(&directive(9, "1.0")));
        // A stale message (a reconnect replaying) changes nothing.
        assert!(!state.take(7, Some(directive(7, "1.2"))));
        assert_eq!(state.pending(), Some(&directive(9, "1.0")));
        assert_eq!(state.position, 9);
    }

    #[test]
    fn a_directive_finished_while_a_newer_one_arrived_keeps_the_newer_pending() {
        let mut state = AgentState::new("h", "s", "e");
        state.take(5, Some(directive(5, "1.1")));
        let running = state.pending().cloned().unwrap();
        state.take(6, Some(directive(6, "1.0")));
        state.finish(running, Outcome::Running);
        assert_eq!(state.current.as_ref().unwrap().directive.release, "1.1");
        assert_eq!(state.pending(), Some(&directive(6, "1.0")));
        let rollback = state.pending().cloned().unwrap();
        state.finish(rollback, Outcome::Running);
        assert_eq!(state.pending(), None);
    }

    #[test]
    fn a_rollback_arriving_while_a_wave_runs_is_applied_after_it() {
        let mut state = AgentState::new("h", "s", "e");
        state.take(5, Some(directive(5, "1.0")));
        state.start();
        state.finish(directive(5, "1.0"), Outcome::Running);
        state.take(9, Some(directive(9, "1.1")));
        state.start();
        // The rollback asks for what ran before the wave: it must still be applied after it.
        assert!(state.take(12, Some(directive(12, "1.0"))));
        state.finish(directive(9, "1.1"), Outcome::Running);
        assert_eq!(state.pending(), Some(&directive(12, "1.0")));
        assert_eq!(state.attempts, 0);
    }

    #[test]
    fn a_newer_directive_for_the_release_being_installed_changes_nothing() {
        let mut state = AgentState::new("h", "s", "e");
        state.take(9, Some(directive(9, "1.1")));
        state.start();
        state.take(12, Some(directive(12, "1.1")));
        assert_eq!(state.pending(), Some(&directive(9, "1.1")));
        assert_eq!((state.attempts, state.position), (1, 12));
        // A replay of anything the stream already passed is ignored.
        assert!(!state.take(11, Some(directive(11, "1.2"))));
    }

    #[test]
    fn asking_for_what_already_runs_cancels_the_pending_target() {
        let mut state = AgentState::new("h", "s", "e");
        state.take(5, Some(directive(5, "1.0")));
        state.finish(directive(5, "1.0"), Outcome::Running);
        state.take(6, Some(directive(6, "1.1")));
        state.take(7, Some(directive(7, "1.0")));
        assert_eq!(state.pending(), None);
        assert_eq!(state.position, 7);
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
