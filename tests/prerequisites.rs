//! The set-up script finds exactly what the build loads: libclang under a name that clang-sys
//! accepts, not any file that starts with `libclang`.

use std::path::Path;
use std::process::Command;

/// What `scripts/prerequisites.sh --print-missing` would install when libclang is looked for in
/// `directory` alone.
fn missing_with_libclang_in(directory: &Path) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prerequisites.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("--print-missing")
        .env("FLEETLOG_LIBCLANG_DIRS", directory)
        .output()
        .expect("run the prerequisites script");
    assert!(output.status.success(), "the script failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
}

/// Debian's image ships `libclang-cpp.so.14`, which bindgen cannot use: alone, it must not count
/// as libclang, and the script asks for libclang-dev.
#[test]
fn libclang_cpp_alone_asks_for_libclang_dev() {
    let directory = tempfile::TempDir::new().unwrap();
    std::fs::write(directory.path().join("libclang-cpp.so.14"), b"").unwrap();
    std::fs::write(directory.path().join("libclang-cpp.so"), b"").unwrap();
    std::fs::write(directory.path().join("libclang.so.1"), b"").unwrap();
    let missing = missing_with_libclang_in(directory.path());
    assert!(missing.contains(&"libclang-dev".to_string()), "libclang-dev not asked for: {missing:?}");
}

/// The names clang-sys loads (`libclang.so`, `libclang-<version>.so`) each satisfy the check.
#[test]
fn the_names_clang_sys_loads_are_found() {
    for name in ["libclang.so", "libclang-14.so", "libclang-16.0.so"] {
        let directory = tempfile::TempDir::new().unwrap();
        std::fs::write(directory.path().join(name), b"").unwrap();
        let missing = missing_with_libclang_in(directory.path());
        assert!(!missing.contains(&"libclang-dev".to_string()), "{name} was not found: {missing:?}");
    }
}

/// The tools the tests run are checked too, so none is skipped silently: with an empty PATH
/// (bash is started by its full path) the script asks for each of them.
#[test]
fn the_tools_the_tests_need_are_checked() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prerequisites.sh");
    let empty = tempfile::TempDir::new().unwrap();
    let output = Command::new("/bin/bash")
        .arg(script)
        .arg("--print-missing")
        .env("PATH", empty.path())
        .env("FLEETLOG_LIBCLANG_DIRS", empty.path())
        .output()
        .expect("run the prerequisites script");
    let missing = String::from_utf8(output.stdout).unwrap();
    for package in ["g++", "make", "openssl", "python3", "curl", "util-linux", "libclang-dev"] {
        assert!(missing.lines().any(|line| line == package), "{package} is not checked: {missing:?}");
    }
}

/// A browser is a prerequisite of the browser tests only: `--tests` asks for chromium and its
/// WebDriver (in either order with `--print-missing`), and for systemd, whose `systemd-analyze`
/// checks the packaged units, while the plain run that `make run` uses leaves them out, so
/// building the server never pulls in a browser.
#[test]
fn the_browser_is_checked_only_for_the_tests() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prerequisites.sh");
    let empty = tempfile::TempDir::new().unwrap();
    let missing_with = |arguments: &[&str]| -> Vec<String> {
        let output = Command::new("/bin/bash")
            .arg(script)
            .args(arguments)
            .env("PATH", empty.path())
            .env("FLEETLOG_LIBCLANG_DIRS", empty.path())
            .output()
            .expect("run the prerequisites script");
        assert!(output.status.success(), "{arguments:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
    };
    let browser = ["chromium", "chromium-driver", "systemd"];
    for arguments in [["--print-missing", "--tests"], ["--tests", "--print-missing"]] {
        let missing = missing_with(&arguments);
        for package in browser {
            assert!(missing.iter().any(|line| line == package), "{arguments:?}: {package} is not checked: {missing:?}");
        }
    }
    let missing = missing_with(&["--print-missing"]);
    assert!(missing.contains(&"g++".to_string()), "the build's tools are still checked: {missing:?}");
    for package in browser {
        assert!(!missing.iter().any(|line| line == package), "{package} is asked for without --tests: {missing:?}");
    }
}

/// Schemathesis, which tests/openapi.rs runs, is a prerequisite of the tests only and counts as
/// installed only at the version the script pins: missing, or another version in the tools
/// directory, `--tests` asks for it; the plain run never does.
#[test]
fn schemathesis_is_checked_for_the_tests_at_its_pinned_version() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/prerequisites.sh");
    let pinned = include_str!("../scripts/prerequisites.sh")
        .lines()
        .find_map(|line| line.strip_prefix("SCHEMATHESIS_VERSION="))
        .expect("the script pins a Schemathesis version");
    let tools = tempfile::TempDir::new().unwrap();
    let missing_with = |arguments: &[&str]| -> Vec<String> {
        let output = Command::new("bash")
            .arg(script)
            .args(arguments)
            .env("FLEETLOG_TOOLS_DIR", tools.path())
            .output()
            .expect("run the prerequisites script");
        assert!(output.status.success(), "{arguments:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect()
    };
    let asked = |missing: &[String]| missing.iter().any(|line| line == "schemathesis");
    assert!(asked(&missing_with(&["--tests", "--print-missing"])), "a missing Schemathesis is not asked for");
    assert!(!asked(&missing_with(&["--print-missing"])), "Schemathesis is asked for without --tests");

    // A stand-in that answers `--version` as Schemathesis does.
    let install = |version: &str| {
        let bin = tools.path().join("schemathesis/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let program = bin.join("schemathesis");
        std::fs::write(&program, format!("#!/bin/sh\necho 'schemathesis, version {version}'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    install("3.0.0");
    assert!(asked(&missing_with(&["--tests", "--print-missing"])), "another version counts as installed");
    install(pinned);
    assert!(!asked(&missing_with(&["--tests", "--print-missing"])), "the pinned version is asked for again");
}
