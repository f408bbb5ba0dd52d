//! What an operator installs and runs besides the server: the version, shell completions.

mod common;

use std::process::Command;

use common::binary;

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
