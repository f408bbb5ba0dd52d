//! `--check`: the host's own health check, run every `--check-every` as `sh -c CMD`. Exit 0 is
//! healthy; anything else, or no answer within the interval, is unhealthy. Every verdict is
//! passed on; the agent reports only the ones that change what it said last, so a fleet of
//! healthy hosts writes nothing.

use std::time::Duration;

use tokio::sync::watch;

use crate::agent::runner::shell;
use crate::agent::state::Outcome;
use crate::agent::Identity;

/// One run of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    /// Exit status and the tail of the output.
    pub message: String,
}

pub struct Check {
    pub command: String,
    pub every: Duration,
    pub identity: Identity,
}

/// Runs the check for ever (until the receiver is dropped); the first run is at once.
pub fn spawn(check: Check) -> watch::Receiver<Option<Verdict>> {
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let variables = [
            ("FLEETLOG_SERVICE", check.identity.service.clone()),
            ("FLEETLOG_ENV", check.identity.env.clone()),
            ("FLEETLOG_HOST", check.identity.host.clone()),
        ];
        let mut ticks = tokio::time::interval(check.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let verdict = match shell(&check.command, &variables, check.every).await {
                Ok((outcome, message)) => Verdict { healthy: outcome == Outcome::Running, message },
                Err(error) => Verdict { healthy: false, message: format!("cannot run the check: {error}") },
            };
            if sender.send(Some(verdict)).is_err() {
                return;
            }
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str) -> Check {
        Check {
            command: command.into(),
            every: Duration::from_millis(100),
            identity: Identity { host: "web-1".into(), service: "checkout".into(), env: "prod".into() },
        }
    }

    async fn next(receiver: &mut watch::Receiver<Option<Verdict>>) -> Verdict {
        tokio::time::timeout(Duration::from_secs(5), receiver.changed()).await.expect("a verdict in time").unwrap();
        receiver.borrow_and_update().clone().expect("a verdict")
    }

    #[tokio::test]
    async fn exit_zero_is_healthy_and_anything_else_is_not() {
        let mut healthy = spawn(check("test \"$FLEETLOG_HOST\" = web-1"));
        assert!(next(&mut healthy).await.healthy);
        let mut failing = spawn(check("echo 'disk 97% full'; exit 1"));
        let verdict = next(&mut failing).await;
        assert!(!verdict.healthy);
        assert!(verdict.message.contains("disk 97% full"), "{}", verdict.message);
        // A check that does not answer within its interval is unhealthy.
        let mut stuck = spawn(check("sleep 5"));
        assert!(!next(&mut stuck).await.healthy);
    }
}
