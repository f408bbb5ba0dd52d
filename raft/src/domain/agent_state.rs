//! What an agent knows of its host's directives, and which one it applies next: the agent saves
//! it across restarts (`fleetlog agent`), and the simulator runs the same rules for its agents.
//!
//! A directive stays the target until its command succeeds: a failed attempt keeps it, to be
//! retried after a pause (kept in memory only, so a restarted agent retries at once), unless a
//! newer directive replaces it first.

use std::time::Instant;

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

/// The health this agent last said in a report (with `--check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaidHealth {
    pub healthy: bool,
    /// How many times it changed: part of each report's id, so unhealthy, healthy, unhealthy
    /// again are three reports, not one written and one taken for its retry.
    pub changes: u64,
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
    /// What this host runs: the last directive whose command finished, successfully or not.
    pub current: Option<Applied>,
    /// The newest directive not yet applied successfully: not started, running, interrupted by a
    /// crash or failed (to be retried). Only ever replaced by a newer one.
    pub target: Option<Directive>,
    /// Times the command has been started for `target`; a start interrupted by a crash counts.
    /// Zero: the target has not been started.
    pub attempts: u32,
    /// The health last reported (never reported: taken as healthy, so a healthy host writes
    /// nothing).
    #[serde(default)]
    pub health: Option<SaidHealth>,
    /// The directive whose command is running now (never saved: nothing runs after a restart).
    #[serde(skip)]
    running: Option<Directive>,
    /// When the failed target is to be retried (never saved: a restarted agent retries at once).
    #[serde(skip)]
    retry_at: Option<Instant>,
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
            health: None,
            running: None,
            retry_at: None,
        }
    }

    /// The seq of the newest directive this agent knows of, applied or not.
    fn newest_seq(&self) -> u64 {
        let current = self.current.as_ref().map_or(0, |applied| applied.directive.seq);
        let target = self.target.as_ref().map_or(0, |directive| directive.seq);
        current.max(target)
    }

    /// The release this host has or is getting without any further command: the one the running
    /// command installs if it is the target's, else the one the last command installed
    /// successfully, unless the target was already attempted since (the host may be half-way).
    fn installed(&self) -> Option<&str> {
        match (&self.target, &self.running) {
            (Some(target), Some(running)) if target == running => Some(target.release.as_str()),
            (_, Some(_)) => None,
            (Some(_), None) if self.attempts > 0 => None,
            _ => self
                .current
                .as_ref()
                .filter(|applied| applied.outcome == Outcome::Running)
                .map(|applied| applied.directive.release.as_str()),
        }
    }

    /// Takes in a desired release announced at `position`. The newest directive wins: one the
    /// stream already passed is ignored; a newer one replaces the target, and with it any retry
    /// waiting for a failed target (the newer directive is applied at once). A command already
    /// running is not interrupted: the newer directive is applied after it, unless it asks for the
    /// release that command installs for the target. A target not started yet is dropped when the
    /// newer directive asks for what already runs. Returns whether anything changed.
    pub fn take(&mut self, position: u64, directive: Option<Directive>) -> bool {
        let mut changed = false;
        if let Some(directive) = directive {
            let fresh = directive.seq > self.newest_seq() && (self.position == 0 || directive.seq > self.position);
            if fresh {
                if self.installed() == Some(directive.release.as_str()) {
                    // Nothing new to install; a pending target that was never started is moot.
                    if self.target.is_some() && self.attempts == 0 {
                        self.target = None;
                        changed = true;
                    }
                } else {
                    self.target = Some(directive);
                    self.attempts = 0;
                    self.retry_at = None;
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

    /// Records that the command for the target started (saved before it runs): the attempt's
    /// number, counted from 1.
    pub fn start(&mut self) -> u32 {
        self.attempts += 1;
        self.running = self.target.clone();
        self.retry_at = None;
        self.attempts
    }

    /// The directive to apply next, if any (now or when its retry is due).
    pub fn pending(&self) -> Option<&Directive> {
        self.target.as_ref()
    }

    /// The directive to start now: the target, unless a command is running or the target failed
    /// and its retry is not due before `now`.
    pub fn due(&self, now: Instant) -> Option<&Directive> {
        if self.running.is_some() || self.retry_at.is_some_and(|at| at > now) {
            return None;
        }
        self.target.as_ref()
    }

    /// When the failed target will be retried, while it waits for that.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.running.is_none() && self.target.is_some())
    }

    /// Records that `directive`'s command finished. Success clears the target, unless a newer
    /// directive replaced it meanwhile. A failed target stays the target, to be retried: the
    /// answer is then the failed attempt's number, and the caller sets when with [`Self::defer`].
    /// A directive replaced while its command ran is not retried: the newer one is due at once.
    pub fn finish(&mut self, directive: Directive, outcome: Outcome) -> Option<u32> {
        self.running = None;
        let mut retry = None;
        if self.target.as_ref() == Some(&directive) {
            match outcome {
                Outcome::Running => {
                    self.target = None;
                    self.attempts = 0;
                }
                Outcome::Failed => retry = Some(self.attempts),
            }
        }
        self.current = Some(Applied { directive, outcome });
        retry
    }

    /// Holds the retry of the failed target until `at`; a newer directive or a restart cancels
    /// the wait.
    pub fn defer(&mut self, at: Instant) {
        if self.target.is_some() && self.running.is_none() {
            self.retry_at = Some(at);
        }
    }

    /// A state saved by an agent that did not retry failed commands (it cleared the target of a
    /// failed command): the failed directive becomes the target again, as failed once, so it is
    /// retried at once and its next attempt is reported as the second.
    pub fn resume_failed(&mut self) {
        if self.target.is_none() {
            if let Some(applied) = self.current.as_ref().filter(|applied| applied.outcome == Outcome::Failed) {
                self.target = Some(applied.directive.clone());
                self.attempts = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// A failed command keeps its directive as the target, due again only when its retry is;
    /// the saved state remembers it was not installed, so a restarted agent retries it at once.
    /// A newer directive replaces a target waiting for its retry: the wait is cancelled and the
    /// newer directive is due at once, whatever its release; a stale one changes nothing.
    #[test]
    fn a_newer_directive_replaces_a_pending_retry() {
        let (now, later) = (Instant::now(), Instant::now() + Duration::from_secs(3600));
        let mut state = AgentState::new("h", "s", "e");
        state.take(5, Some(directive(5, "1.0")));
        state.start();
        state.finish(directive(5, "1.0"), Outcome::Running);
        state.take(9, Some(directive(9, "1.1")));
        state.start();
        assert_eq!(state.finish(directive(9, "1.1"), Outcome::Failed), Some(1));
        state.defer(later);
        assert!(!state.take(8, Some(directive(8, "1.2"))));
        assert_eq!(state.due(now), None);
        // What ran before the failed attempt must be applied again: the host may be half-way.
        assert!(state.take(12, Some(directive(12, "1.0"))));
        assert_eq!(state.due(now), Some(&directive(12, "1.0")));
        assert_eq!((state.attempts, state.retry_at()), (0, None));
        // A newer directive for the very release whose retry waits replaces it too.
        state.start();
        assert_eq!(state.finish(directive(12, "1.0"), Outcome::Failed), Some(1));
        state.defer(later);
        assert!(state.take(14, Some(directive(14, "1.0"))));
        assert_eq!(state.due(now), Some(&directive(14, "1.0")));
        assert_eq!((state.attempts, state.retry_at()), (0, None));
    }

    /// A command that fails after a newer directive replaced its target is not retried: the newer
    /// directive is due at once, even when a later one asks again for what last ran successfully.
    #[test]
    fn a_command_failing_after_its_directive_was_replaced_is_not_retried() {
        let now = Instant::now();
        let mut state = AgentState::new("h", "s", "e");
        state.take(5, Some(directive(5, "1.0")));
        state.start();
        state.finish(directive(5, "1.0"), Outcome::Running);
        state.take(9, Some(directive(9, "1.1")));
        state.start();
        state.take(12, Some(directive(12, "1.2")));
        // 1.0 ran before 1.1 started, but the running command may leave the host on 1.1.
        assert!(state.take(13, Some(directive(13, "1.0"))));
        assert_eq!(state.finish(directive(9, "1.1"), Outcome::Failed), None);
        assert_eq!((state.due(now), state.attempts), (Some(&directive(13, "1.0")), 0));
    }
}
