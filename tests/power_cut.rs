//! Power cuts: every node of a 3-node cluster keeps its data on one lossy FUSE file system
//! (`common::lossy_fs`), all are killed at once, and the file system then drops everything that
//! was not fsynced, as a machine losing power would. `kill -9` alone keeps the kernel's page cache,
//! so only this catches a missing fsync. After the restart every acknowledged append must be there,
//! and every replica must hold the identical chain.
//!
//! Needs root and /dev/fuse (the CI machine has both).

mod common;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Options};
use common::history::{Endpoints, History, Stop, WriterConfig};
use common::lossy_fs::{CutReport, LossyMount};
use serde_json::Value;

/// Longest a group of writers may take for its appends.
const WRITERS_WAIT: Duration = Duration::from_secs(60);

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut file = fs::File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

/// After a cut the lossy file system holds exactly what was fsynced, and names as they were.
#[test]
fn the_lossy_file_system_keeps_only_what_was_synced() {
    // A file never fsynced is empty, an fsynced one intact, writes and truncations after the last
    // fsync are undone, directories and names stay, a file renamed into place unsynced is empty.
    let mut mount = LossyMount::mount_temporary();
    let root = mount.path().to_path_buf();
    // Larger than one page of the file system's content, not a multiple of it.
    let large: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();

    fs::create_dir(root.join("directory")).unwrap();
    fs::write(root.join("directory/unsynced"), b"lost").unwrap();
    write_synced(&root.join("directory/synced"), &large);
    write_synced(&root.join("grown"), b"kept");
    fs::OpenOptions::new().append(true).open(root.join("grown")).unwrap().write_all(b" and lost").unwrap();
    write_synced(&root.join("shrunk"), b"kept whole");
    fs::OpenOptions::new().write(true).open(root.join("shrunk")).unwrap().set_len(4).unwrap();
    write_synced(&root.join("config"), b"old");
    fs::write(root.join("config.tmp"), b"new").unwrap();
    fs::rename(root.join("config.tmp"), root.join("config")).unwrap();
    // fdatasync counts as much as fsync.
    let mut data_synced = fs::File::create(root.join("data-synced")).unwrap();
    data_synced.write_all(b"durable").unwrap();
    data_synced.sync_data().unwrap();
    drop(data_synced);
    // Directory entries are durable at once; an fsync of the directory only clears them from the
    // report of names never made durable by one.
    fs::File::open(root.join("directory")).unwrap().sync_all().unwrap();

    // Before the cut every write is visible.
    assert_eq!(fs::read(root.join("directory/unsynced")).unwrap(), b"lost");
    assert_eq!(fs::read(root.join("grown")).unwrap(), b"kept and lost");
    assert_eq!(fs::read(root.join("shrunk")).unwrap(), b"kept");
    assert_eq!(fs::read(root.join("config")).unwrap(), b"new");
    let free = fleetlog_raft::storage::disk::free_bytes(&root).unwrap();
    assert!(free > 1 << 30, "the server refuses appends below 256 MiB free; the file system reports {free}");

    let report = mount.power_cut();
    assert_eq!(fs::read(root.join("directory/unsynced")).unwrap(), b"", "{report}");
    assert_eq!(fs::read(root.join("directory/synced")).unwrap(), large, "{report}");
    assert_eq!(fs::read(root.join("grown")).unwrap(), b"kept", "{report}");
    assert_eq!(fs::read(root.join("shrunk")).unwrap(), b"kept whole", "{report}");
    assert_eq!(fs::read(root.join("config")).unwrap(), b"", "the renamed file was never synced; {report}");
    assert!(!root.join("config.tmp").exists());
    assert_eq!(fs::read(root.join("data-synced")).unwrap(), b"durable", "{report}");
    let reverted: Vec<&str> = report.reverted.iter().map(|file| file.path.as_str()).collect();
    assert_eq!(reverted, ["/config", "/directory/unsynced", "/grown", "/shrunk"], "{report}");
    assert_eq!(
        report.names_without_fsyncdir,
        ["/config", "/config.tmp", "/data-synced", "/directory", "/grown", "/shrunk"],
        "{report}"
    );

    // Mounted again, it works as before, and a second cut keeps what was synced since.
    write_synced(&root.join("directory/unsynced"), b"synced now");
    fs::write(root.join("grown"), b"lost again").unwrap();
    let report = mount.power_cut();
    assert_eq!(fs::read(root.join("directory/unsynced")).unwrap(), b"synced now", "{report}");
    assert_eq!(fs::read(root.join("grown")).unwrap(), b"kept", "{report}");
}

// ----- clusters --------------------------------------------------------------------------------

/// `writers` clients at once, each appending `appends` events one after the other (no pause),
/// writer i first talking to endpoint i. Returns when all are acknowledged (or fails).
async fn append(cluster: &Cluster, history: &Arc<History>, endpoints: &Endpoints, writers: usize, appends: usize) {
    let stop = Stop::new();
    let tasks: Vec<_> = (0..writers)
        .map(|first| {
            let mut config = WriterConfig::new(endpoints, first);
            config.max_ops = Some(appends);
            config.pause = Duration::ZERO;
            history.spawn_writer(config, &stop)
        })
        .collect();
    let joined = tokio::time::timeout(WRITERS_WAIT, futures::future::join_all(tasks)).await;
    match joined {
        Ok(results) => {
            for result in results {
                if let Err(error) = result {
                    cluster.fail(&format!("a writer failed: {error}"));
                }
            }
        }
        Err(_) => {
            stop.stop();
            cluster.fail(&format!("{writers} writers did not make {appends} appends each within {WRITERS_WAIT:?}"));
        }
    }
}

/// The power cut: SIGKILL every member, drop what the file system had not made durable, start
/// every member again on the same data, and wait for a leader and every node's readiness.
async fn power_cut(cluster: &mut Cluster, mount: &mut LossyMount) -> CutReport {
    let members = cluster.members();
    for &id in &members {
        cluster.kill(id);
    }
    let report = mount.power_cut();
    for &id in &members {
        cluster.restart(id).await;
    }
    cluster.wait_leader().await;
    cluster.wait_ready_all().await;
    report
}

/// What must survive besides the events: the cluster id, the checkpoint key, and the signed
/// checkpoint of the first `size` events (Ed25519 signs deterministically: the same key and
/// root give the same bytes).
async fn identity(cluster: &Cluster, id: u64, size: u64) -> (String, String, String) {
    let status = cluster.status(id).await.unwrap_or(Value::Null);
    let cluster_id = status["cluster_id"].as_str().unwrap_or_default().to_string();
    let key = cluster.text_when_ready(id, "/v1/checkpoint/key").await;
    let checkpoint = cluster.text_when_ready(id, &format!("/v1/checkpoint?tree_size={size}&consistency=local")).await;
    cluster.check(!cluster_id.is_empty(), || format!("node {id} states no cluster id: {status}"));
    (cluster_id, key, checkpoint)
}

/// Checks that every member states the identity read before the cut.
async fn check_identity(cluster: &Cluster, before: &(String, String, String), size: u64) {
    for id in cluster.members() {
        let after = identity(cluster, id, size).await;
        cluster.check(&after == before, || format!("node {id} after the power cut: {after:?}\nbefore: {before:?}"));
    }
}

/// Every append acknowledged before a power cut of all three nodes is there after it, once, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_a_power_cut_of_every_node() {
    // 200 appends: 80 one at a time (each its own Raft entry), then 120 from six concurrent
    // writers (batched). Afterwards each is at its acknowledged seq with its hash, the chains are
    // identical on every node, and the cluster id, signing key and signed checkpoints unchanged.
    let mut mount = LossyMount::mount_temporary();
    let mut cluster =
        Cluster::start(Options { data_root: Some(mount.path().to_path_buf()), ..Options::default() }).await;
    let started = Instant::now();
    let history = History::new();
    let endpoints = cluster.shared_endpoints();
    append(&cluster, &history, &endpoints, 1, 80).await;
    append(&cluster, &history, &endpoints, 6, 20).await;
    cluster.check(history.acked() == 200, || format!("{} of 200 appends acknowledged", history.acked()));
    let leader = cluster.wait_leader().await;
    let head = cluster.local_head(leader).await.unwrap_or(0);
    let before = identity(&cluster, leader, head).await;

    let report = power_cut(&mut cluster, &mut mount).await;
    eprintln!("{report}");
    let (summary, log) = cluster.check_history(&history).await;
    cluster.check(log.len() as u64 >= head, || format!("head {head} before the cut, {} after", log.len()));
    check_identity(&cluster, &before, head).await;

    // The cluster goes on where it stopped.
    append(&cluster, &history, &cluster.shared_endpoints(), 1, 5).await;
    let (summary_after, _) = cluster.check_history(&history).await;
    eprintln!("before the cut: {summary}; after 5 more: {summary_after}; took {:?}", started.elapsed());
}

/// Snapshot files survive a power cut: a follower behind the purged log catches up from one written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_files_survive_a_power_cut() {
    // With a snapshot every 20 entries, a follower is down while the others append 100 events,
    // snapshot and purge their logs; then every node loses power. Restarted, the follower can only
    // catch up by installing a snapshot file written before the cut, and every acknowledged append
    // must be on every node.
    let mut mount = LossyMount::mount_temporary();
    let options =
        Options { data_root: Some(mount.path().to_path_buf()), snapshot_every: Some(20), ..Options::default() };
    let mut cluster = Cluster::start(options).await;
    let started = Instant::now();
    let history = History::new();
    append(&cluster, &history, &cluster.shared_endpoints(), 1, 30).await;
    let leader = cluster.wait_leader().await;
    let lagging = *cluster.voters().iter().find(|&&id| id != leader).unwrap();
    let lagging_index = last_log_index(&cluster, lagging).await;
    cluster.kill(lagging);

    let running: Vec<u64> = cluster.voters().into_iter().filter(|&id| id != lagging).collect();
    let endpoints = Endpoints::new(running.iter().map(|&id| (id, cluster.url(id))).collect());
    append(&cluster, &history, &endpoints, 1, 100).await;
    // Both nodes that could lead after the restart have purged past what the follower holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    for &id in &running {
        while purged_index(&cluster, id).await <= lagging_index {
            if Instant::now() > deadline {
                let status = cluster.status(id).await.unwrap_or(Value::Null);
                cluster.fail(&format!("node {id} did not purge past {lagging_index}: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Appends after the purges, whose log fsyncs make the purges durable too.
    append(&cluster, &history, &endpoints, 1, 10).await;
    let head = cluster.local_head(running[0]).await.unwrap_or(0);
    let before = identity(&cluster, running[0], head).await;

    let report = power_cut(&mut cluster, &mut mount).await;
    eprintln!("{report}");
    for &id in &running {
        let purged = purged_index(&cluster, id).await;
        cluster.check(purged > lagging_index, || {
            format!(
                "after the cut node {id} has purged only up to {purged}; node {lagging} holds up to {lagging_index}"
            )
        });
    }
    let (summary, _) = cluster.check_history(&history).await;
    check_identity(&cluster, &before, head).await;
    let since_restart = log_since_last_start(&cluster, lagging);
    cluster.check(since_restart.contains("installed snapshot"), || {
        format!("node {lagging} did not install a snapshot after its restart (its log says no \"installed snapshot\")")
    });
    eprintln!(
        "node {lagging} (log up to {lagging_index}) caught up from a snapshot after the cut; {summary}; took {:?}",
        started.elapsed()
    );
}

/// The last log index node `id` reports for itself.
async fn last_log_index(cluster: &Cluster, id: u64) -> u64 {
    own_status(cluster, id).await["last_log_index"].as_u64().unwrap_or(0)
}

async fn purged_index(cluster: &Cluster, id: u64) -> u64 {
    own_status(cluster, id).await["purged_index"].as_u64().unwrap_or(0)
}

async fn own_status(cluster: &Cluster, id: u64) -> Value {
    cluster.status(id).await.map(|status| status["this_node"].clone()).unwrap_or(Value::Null)
}

/// Node `id`'s log from the harness's last "starting node" line on.
fn log_since_last_start(cluster: &Cluster, id: u64) -> String {
    let log = cluster.log_tail(id, usize::MAX);
    let marker = format!("==== harness: starting node {id} ");
    match log.rfind(&marker) {
        Some(position) => log[position..].to_string(),
        None => log,
    }
}
