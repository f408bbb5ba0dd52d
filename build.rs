//! Records the commit the binary is built from, for `fleetlog --version`: `FLEETLOG_COMMIT` when
//! the builder sets it (a source tarball has no git), else `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLEETLOG_COMMIT");
    let commit = std::env::var("FLEETLOG_COMMIT").ok().filter(|commit| !commit.is_empty()).or_else(|| {
        // A new commit moves the branch's ref, not HEAD itself: watch both so the next build
        // after a commit records it.
        for watched in [
            git(&["rev-parse", "--git-path", "HEAD"]),
            symbolic_ref_path(),
            git(&["rev-parse", "--git-path", "packed-refs"]),
        ]
        .into_iter()
        .flatten()
        {
            println!("cargo:rerun-if-changed={watched}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=FLEETLOG_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}

fn symbolic_ref_path() -> Option<String> {
    let reference = git(&["symbolic-ref", "-q", "HEAD"])?;
    git(&["rev-parse", "--git-path", &reference])
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}
