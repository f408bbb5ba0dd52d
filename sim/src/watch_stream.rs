//! A live watch stream of one host on one node, as the server's `/v1/watch/{host}` runs it:
//! catch up from disk, then follow the node's feed with the product's [`HostFollower`], and go
//! back to disk whenever it reports a gap. The directives go to the agent over a channel, each
//! batch with the seq the stream owes next.
//!
//! The loop is the simulator's, written to do what the server's stream loop does; the
//! resolution of directives from layer changes, the feed and its announcements are the
//! product's. The stream ends when its node's incarnation does (a read of the disk then fails),
//! or when the agent drops it.

use std::time::Duration;

use fleetlog_raft::domain::desired::Directive;
use fleetlog_raft::domain::resume::{resume_position, ResumeError};
use fleetlog_raft::domain::views;
use fleetlog_raft::storage::feed::Feed;
use fleetlog_raft::storage::host_follow::{FollowStep, HostFollower};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::disk::Disk;

/// Directives read from disk per catch-up step, as the server reads them.
const CATCH_UP_DIRECTIVES: usize = 1_000;

/// What a stream sends its agent: directives, and the seq the stream owes next.
pub type Sent = (Vec<Directive>, u64);

/// A running stream; dropping it ends it.
pub struct LiveWatch {
    pub incarnation: u64,
    pub receiver: mpsc::UnboundedReceiver<Sent>,
    task: JoinHandle<()>,
}

impl Drop for LiveWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LiveWatch {
    /// Starts a stream of `host`'s directives from seq `next` on the node whose disk and feed
    /// (of incarnation `incarnation`) these are. The server refuses a position more than one past
    /// its head, as this does.
    pub fn start(
        disk: Disk,
        incarnation: u64,
        feed: Feed,
        host: &'static str,
        next: u64,
    ) -> Result<LiveWatch, ResumeError> {
        resume_position(None, Some(&next.to_string()), feed.head_seq())?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // An error is the node's incarnation ending: the stream ends with it.
            let _ = stream(disk, incarnation, feed, host, next, sender).await;
        });
        Ok(LiveWatch { incarnation, receiver, task })
    }
}

async fn stream(
    disk: Disk,
    incarnation: u64,
    feed: Feed,
    host: &'static str,
    mut next: u64,
    sender: mpsc::UnboundedSender<Sent>,
) -> Result<(), String> {
    // Subscribed before the head is read, so nothing committed in between is missed.
    let mut follower = HostFollower::new(&feed, host);
    loop {
        // The channels may have heard of an apply step before it is on disk.
        let disk_until = follower.disk_until();
        while feed.head_seq() < disk_until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        loop {
            let head = feed.head_seq();
            if next > head {
                break;
            }
            let read = disk
                .read(incarnation, |stored| {
                    views::directives_between(&stored.state, host, next, head, CATCH_UP_DIRECTIVES)
                })
                .map_err(|error| error.to_string())?;
            let (directives, after) = read.map_err(|error| error.to_string())?;
            if after <= next {
                break;
            }
            next = after;
            sender.send((directives, next)).map_err(|_| "the agent left")?;
        }
        let records = disk
            .read(incarnation, |stored| views::host_state(&stored.state, host, Some(next - 1)))
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        if follower.caught_up(next - 1, records) {
            continue;
        }
        loop {
            match follower.next(next).await {
                FollowStep::Directives { directives, head_seq } => {
                    next = next.max(head_seq + 1);
                    sender.send((directives, next)).map_err(|_| "the agent left")?;
                }
                FollowStep::Gap => break,
                FollowStep::Closed => return Ok(()),
            }
        }
    }
}
