use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: the server makes many small, short-lived allocations on
/// several threads, and glibc spent about a fifth of a loaded leader's CPU on them (see
/// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long an exiting process waits for its databases to finish closing.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    let filter = EnvFilter::try_from_env("FLEETLOG_LOG").unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = fleetlog::parse_arguments();
    let json_errors = matches!(cli.output, fleetlog::cli::Output::Json);
    if !long_running(&cli.command) {
        end_quietly_on_a_closed_pipe();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the async runtime");
    let result = runtime.block_on(fleetlog::run(cli));
    // Dropping the runtime drops every task and the database handles they hold; the last handle
    // may go on another thread, so wait for RocksDB to close before the process exits.
    drop(runtime);
    if !fleetlog_raft::storage::db::wait_until_closed(CLOSE_WAIT) {
        tracing::warn!("a database was still open when the process exited");
    }
    if let Err(error) = result {
        if json_errors {
            eprintln!("{}", error_json(&error));
        } else {
            eprintln!("error: {error:#}");
        }
        // `deploy wait` ends with a code of its own (1 failed, 2 timed out).
        let code = error.downcast_ref::<fleetlog::wait::WaitEnded>().map_or(1, |ended| ended.code);
        std::process::exit(code);
    }
}

/// Commands that serve or follow streams: they keep Rust's default (SIGPIPE ignored),
/// so a closed pipe or socket is an error they handle, never a signal that ends them.
fn long_running(command: &fleetlog::cli::Command) -> bool {
    use fleetlog::cli::Command;
    matches!(command, Command::Serve(_) | Command::Dev(_) | Command::Agent(_))
}

/// A command whose output goes to a pipe that closes early (`fleetlog history | head`) ends the
/// way Unix tools do, by SIGPIPE, instead of panicking on the failed write. Sockets are not
/// affected: the standard library sends on them with MSG_NOSIGNAL.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An error as `--output json` prints it on standard error: the API's own shape, `{"error":
/// {"code", "message"}}` (with `status` when a server answered), so scripts read one format.
fn error_json(error: &anyhow::Error) -> serde_json::Value {
    use fleetlog_api::client::ClientError;
    let (code, message, status) = match error.downcast_ref::<ClientError>() {
        Some(ClientError::Api { status, code, message }) => (code.clone(), message.clone(), Some(*status)),
        Some(transport @ ClientError::Transport { .. }) => ("unreachable".to_string(), transport.to_string(), None),
        Some(protocol @ ClientError::Protocol { .. }) => ("bad_response".to_string(), protocol.to_string(), None),
        None => ("cli_error".to_string(), format!("{error:#}"), None),
    };
    serde_json::json!({ "error": CliError { code, message, status } })
}

/// The member of [`error_json`]: the API's error with the HTTP status a server answered with.
#[derive(serde::Serialize)]
struct CliError {
    code: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
}
