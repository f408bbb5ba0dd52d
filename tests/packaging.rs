//! What an operator installs and runs besides the server: the version, shell completions, the
//! config file, `make install`'s layout and its systemd units.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_port};

fn run(args: &[&str]) -> String {
    let output = Command::new(binary()).args(args).output().expect("run fleetlog");
    assert!(output.status.success(), "fleetlog {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// `--version` names the commit the binary was built from: the checkout's HEAD when git can tell.
#[test]
fn the_version_names_the_commit() {
    let version = run(&["--version"]);
    let commit = version
        .trim()
        .strip_prefix(concat!("fleetlog ", env!("CARGO_PKG_VERSION"), " (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {version}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{version}"),
        None => assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "{version}"),
    }
}

/// The bash script completes subcommands and their subcommands when bash calls it.
#[test]
fn bash_completes_commands() {
    let completed = |words: &str, current: usize| {
        let script = format!(
            "source <('{}' completions bash) && COMP_WORDS=({words}) && COMP_CWORD={current} && _fleetlog fleetlog \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\" && echo \"${{COMPREPLY[@]}}\"",
            binary()
        );
        let output = Command::new("bash").arg("-c").arg(&script).output().expect("run bash");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(completed("fleetlog dep", 1), ["deploy"]);
    assert_eq!(completed("fleetlog deploy st", 2), ["start", "status"]);
    assert!(completed("fleetlog completions ''", 2).contains(&"fish".to_string()));
}

/// zsh and fish get scripts of their own kind (neither shell is installed here to run them).
#[test]
fn zsh_and_fish_scripts_name_the_commands() {
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef fleetlog") && zsh.contains("'deploy:"), "{zsh}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c fleetlog") && fish.contains("-a \"deploy\""), "{fish}");
}

/// A child process killed when the test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("{url}/readyz")).await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no server became ready at {url}");
}

/// A server takes its address and data directory from the file; a client takes its server and
/// output format from it, and the environment and the command line override it, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_the_file_and_flags_and_environment_override_it() {
    let directory = tempfile::TempDir::new().unwrap();
    let (port, nobody) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let server_file = directory.path().join("server.toml");
    std::fs::write(
        &server_file,
        format!("[serve]\nlisten = \"127.0.0.1:{port}\"\ndata = \"{}\"\n", directory.path().join("data").display()),
    )
    .unwrap();
    let _server = Running(
        Command::new(binary())
            .args(["--config", server_file.to_str().unwrap(), "serve"])
            .env_remove("FLEETLOG_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&url).await;
    assert!(directory.path().join("data").is_dir(), "the data directory named in the file was not used");

    let client_file = directory.path().join("client.toml");
    std::fs::write(&client_file, format!("server = \"http://127.0.0.1:{nobody}\"\noutput = \"json\"\n")).unwrap();
    let history = |environment: Option<&str>, flag: Option<&str>| {
        let mut command = Command::new(binary());
        command.env_remove("FLEETLOG_SERVER").env("FLEETLOG_CONFIG", &client_file);
        if let Some(server) = environment {
            command.env("FLEETLOG_SERVER", server);
        }
        if let Some(server) = flag {
            command.args(["--server", server]);
        }
        let output = command.args(["cluster", "status"]).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let dead = format!("http://127.0.0.1:{nobody}");
    assert!(!history(None, None).0, "the file's server (nobody there) should have been used");
    let (ok, stdout) = history(Some(&url), None);
    assert!(ok, "the environment should override the file's server");
    assert!(serde_json::from_str::<serde_json::Value>(&stdout).is_ok(), "the file's output = json: {stdout}");
    assert!(history(Some(&dead), Some(&url)).0, "the flag should override the environment");
}

/// A mistake in the file stops the command with the file and the key named, before anything runs.
#[test]
fn a_bad_file_is_refused_with_the_key_named() {
    let directory = tempfile::TempDir::new().unwrap();
    let file = directory.path().join("bad.toml");
    for (text, expected) in [
        ("[serve]\nlisen = \"127.0.0.1:1\"\n", "`lisen` in [serve]: `fleetlog serve` has no flag --lisen"),
        ("[serve]\nnode-id = -1\n", "`node-id` in [serve]: invalid value '-1'"),
        ("[serve\n", "is not valid TOML"),
    ] {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(binary()).args(["--config", file.to_str().unwrap(), "serve"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("config file {}", file.display())) && stderr.contains(expected), "{stderr}");
    }
    let missing = Command::new(binary()).args(["--config", "/nonexistent/fleetlog.toml", "fleet"]).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config file /nonexistent/fleetlog.toml"));
}

/// `scripts/install.sh` (what `make install` runs after the release build) into a staging root:
/// the binary, completions, units and settings where systemd and the shells look; the example
/// settings are valid; the units pass `systemd-analyze verify` without a warning and score as
/// well sandboxed; settings already there are kept.
#[test]
fn install_lays_out_binary_units_completions_and_settings() {
    let stage = tempfile::TempDir::new().unwrap();
    let root = stage.path();
    let install = || {
        let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
            .arg(binary())
            .env("DESTDIR", root)
            .env_remove("PREFIX")
            .env_remove("SYSCONFDIR")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    install();
    for path in [
        "usr/local/bin/fleetlog",
        "usr/local/share/bash-completion/completions/fleetlog",
        "usr/local/share/zsh/site-functions/_fleetlog",
        "usr/local/share/fish/vendor_completions.d/fleetlog.fish",
        "usr/local/lib/systemd/system/fleetlog.service",
        "usr/local/lib/systemd/system/fleetlog-agent.service",
        "usr/local/lib/sysusers.d/fleetlog.conf",
        "etc/fleetlog/server.toml",
        "etc/fleetlog/agent.toml",
    ] {
        assert!(root.join(path).is_file(), "{path} was not installed");
    }
    let installed = root.join("usr/local/bin/fleetlog");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("fleetlog "));

    // The examples are what the units run: they must pass the same checks a real start does.
    for (settings, command) in [("server.toml", "serve"), ("agent.toml", "agent")] {
        let path = root.join("etc/fleetlog").join(settings);
        let output =
            Command::new(&installed).args(["--config", path.to_str().unwrap(), command, "--help"]).output().unwrap();
        assert!(output.status.success(), "{settings}: {}", String::from_utf8_lossy(&output.stderr));
    }

    for unit in ["fleetlog.service", "fleetlog-agent.service"] {
        let text = std::fs::read_to_string(root.join("usr/local/lib/systemd/system").join(unit)).unwrap();
        let settings = if unit == "fleetlog.service" { "server.toml" } else { "agent.toml" };
        let expected = [
            format!("LoadCredential={settings}:/etc/fleetlog/{settings}"),
            format!("ExecStart=/usr/local/bin/fleetlog --config %d/{settings} "),
        ];
        assert!(expected.iter().all(|line| text.contains(line.as_str())), "{text}");
        // systemd checks that ExecStart's program exists: point it at the staged binary.
        let checked = root.join(unit);
        std::fs::write(&checked, text.replace("/usr/local/bin/fleetlog", installed.to_str().unwrap())).unwrap();
        let verify = Command::new("systemd-analyze").args(["verify"]).arg(&checked).output().unwrap();
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success() && said.trim().is_empty(), "{unit}: {said}");
        assert!(exposure(&checked) < 2.5, "{unit} is not sandboxed well enough");
    }

    // A second install keeps the operator's settings.
    std::fs::write(root.join("etc/fleetlog/server.toml"), "[serve]\nlisten = \"0.0.0.0:7070\"\n").unwrap();
    install();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/fleetlog/server.toml")).unwrap(),
        "[serve]\nlisten = \"0.0.0.0:7070\"\n"
    );
}

/// systemd's own exposure score of a unit (0 is the most confined, 10 the least).
fn exposure(unit: &Path) -> f64 {
    let output = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(unit).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|line| line.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
    let score = line.rsplit(':').next().unwrap().split_whitespace().next().unwrap();
    score.parse().unwrap_or_else(|_| panic!("{line}"))
}
