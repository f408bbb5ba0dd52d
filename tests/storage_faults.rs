//! A hostile environment under the data directory: a filesystem that fills up, and database
//! files damaged while the node was down.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, free_port, verify_chain, Server};
use serde_json::{json, Value};

/// A small tmpfs the test mounts (this needs root, which the CI machine has), unmounted on drop.
struct SmallFilesystem {
    mount_point: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(megabytes: u64) -> SmallFilesystem {
        let mount_point = tempfile::TempDir::new().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(mount_point.path())
            .status()
            .expect("run mount");
        assert!(mounted.success(), "mounting a {megabytes} MiB tmpfs failed: this test needs root");
        SmallFilesystem { mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }

    fn free_bytes(&self) -> u64 {
        fleetlog_raft::storage::disk::free_bytes(self.path()).unwrap()
    }

    /// Takes all but `leave` bytes of the free space with one file.
    fn fill_leaving(&self, name: &str, leave: u64) -> PathBuf {
        let filler = self.path().join(name);
        let length = self.free_bytes().saturating_sub(leave);
        let allocated = Command::new("fallocate").args(["-l", &length.to_string()]).arg(&filler).status().unwrap();
        assert!(allocated.success(), "fallocate of {length} bytes failed");
        filler
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
    }
}

async fn append(server: &Server, stream: &str) -> (u16, Value) {
    server.post("/v1/events", &json!({"events": [{"type": "app.note", "stream": stream, "data": {"n": 1}}]})).await
}

/// The first event of a subscription from seq 1, read within a few seconds.
async fn first_streamed_seq(server: &Server) -> u64 {
    let mut response = server.http.get(format!("{}/v1/subscribe?from_seq=1", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        if let Ok(Some(chunk)) =
            tokio::time::timeout(Duration::from_secs(1), response.chunk()).await.unwrap_or(Ok(None))
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        if let Some(line) = text.lines().find(|line| line.starts_with("id: ")) {
            return line["id: ".len()..].trim().parse().unwrap();
        }
    }
    panic!("the subscription sent no event; got {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_appends_keeps_reads_and_recovers() {
    let filesystem = SmallFilesystem::mount(96);
    let data = filesystem.path().join("data");
    // Appends need 32 MiB free.
    let mut server = Server::start_with(&data, &["--min-free-mib", "32"]).await;
    for stream in ["before-1", "before-2", "before-3"] {
        assert_eq!(append(&server, stream).await.0, 201);
    }
    let before = server.all_events().await;

    // Nearly full: below the reserve, above zero.
    let nearly = filesystem.fill_leaving("nearly", 8 * 1024 * 1024);
    let (status, refusal) = append(&server, "refused").await;
    assert_eq!((status, refusal["error"]["code"].as_str()), (503, Some("disk_full")), "{refusal}");
    assert!(refusal["error"]["message"].as_str().unwrap().contains("bytes free"), "{refusal}");

    // Completely full: still a clear refusal, and reads and streams still work.
    let full = filesystem.fill_leaving("full", 0);
    assert_eq!(filesystem.free_bytes(), 0);
    for _ in 0..3 {
        let (status, refusal) = append(&server, "refused").await;
        assert_eq!((status, refusal["error"]["code"].as_str()), (503, Some("disk_full")), "{refusal}");
    }
    assert_eq!(server.all_events().await, before);
    assert_eq!(first_streamed_seq(&server).await, 1);
    let (status, fleet) = server.get("/v1/fleet").await;
    assert_eq!(status, 200, "{fleet}");
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200, "a full disk must not take a node out of service for reads");

    // Space returns: appends go on where they stopped.
    std::fs::remove_file(full).unwrap();
    std::fs::remove_file(nearly).unwrap();
    let (status, appended) = append(&server, "after").await;
    assert_eq!(status, 201, "{appended}");
    assert_eq!(appended["first_seq"], before.len() as u64 + 1);

    // Nothing is corrupted: the chain verifies, before and after a restart.
    let events = server.all_events().await;
    assert_eq!(&events[..before.len()], &before[..]);
    verify_chain(&events);
    let status = server.terminate().await;
    assert!(status.success(), "{status}: {}", server.log());
    let restarted = Server::start_with(&data, &["--min-free-mib", "32"]).await;
    assert_eq!(restarted.all_events().await, events);
}

/// Starts `serve` on damaged data and returns its exit status and what it printed.
fn start_on(data: &Path) -> (std::process::ExitStatus, String) {
    let output = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data"])
        .arg(data)
        .output()
        .unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn copy_directory(from: &Path, to: &Path) {
    let copied = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(copied.success());
}

/// Files of the database directory whose names end with `suffix`, largest first.
fn database_files(data: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("db"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort_by_key(|path| std::cmp::Reverse(std::fs::metadata(path).unwrap().len()));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_database_files_are_reported_at_start_without_a_panic() {
    let directory = tempfile::TempDir::new().unwrap();
    let pristine = directory.path().join("pristine");
    let mut server = Server::start_with(&pristine, &[]).await;
    for stream in ["a", "b", "c"] {
        assert_eq!(append(&server, stream).await.0, 201);
    }
    assert!(server.terminate().await.success());
    // A second start replays the write-ahead log into table files, which the cases below damage.
    let mut server = Server::start_with(&pristine, &[]).await;
    assert!(server.terminate().await.success());
    assert!(!database_files(&pristine, ".sst").is_empty(), "expected table files after a restart");

    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 4] = [
        (
            "a table file cut in half",
            |data| {
                let table = &database_files(data, ".sst")[0];
                let length = std::fs::metadata(table).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(table).unwrap().set_len(length / 2).unwrap();
            },
            "Sst file size mismatch",
        ),
        (
            "table files overwritten inside",
            |data| {
                use std::io::{Seek, SeekFrom, Write};
                for table in database_files(data, ".sst") {
                    let mut file = std::fs::OpenOptions::new().write(true).open(&table).unwrap();
                    file.seek(SeekFrom::Start(20)).unwrap();
                    file.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef]).unwrap();
                }
            },
            "checksum mismatch",
        ),
        ("a garbled CURRENT file", |data| std::fs::write(data.join("db/CURRENT"), "garbage\n").unwrap(), "CURRENT"),
        (
            "a truncated MANIFEST",
            |data| {
                let manifest = &database_files(data, "")
                    .into_iter()
                    .find(|path| path.file_name().unwrap().to_string_lossy().starts_with("MANIFEST"))
                    .unwrap();
                std::fs::OpenOptions::new().write(true).open(manifest).unwrap().set_len(100).unwrap();
            },
            "MANIFEST",
        ),
    ];
    for (index, (name, damage, expected)) in cases.into_iter().enumerate() {
        let data = directory.path().join(format!("case-{index}"));
        copy_directory(&pristine, &data);
        damage(&data);
        let (status, printed) = start_on(&data);
        assert_eq!(status.code(), Some(1), "{name}: {printed}");
        assert!(printed.contains("corrupt data") && printed.contains(expected), "{name}: {printed}");
        assert!(!printed.contains("panicked"), "{name}: {printed}");
    }
}
