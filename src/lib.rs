//! fleetlog: the binary's library. `cli` defines the arguments, `serve` runs a node,
//! `cluster` membership, `agent` the host agent, `dev` a local multi-node cluster, `commands` append (releases, deployments, rollbacks, …), `reads` query and follow the log, `verify` audit proofs,
//! `output` prints tables or JSON. The server itself lives in `fleetlog-raft` (ledger, storage,
//! consensus) and `fleetlog-api` (HTTP).

pub mod agent;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod dev;
pub mod output;
pub mod reads;
pub mod serve;
pub mod token;
pub mod verify;
pub mod wait;
pub mod webhook;

use anyhow::{Context, Result};
use fleetlog_api::client::{Client, Credentials};

use crate::cli::{Cli, Command};

/// The command line, with the defaults of the config file it names (`--config`,
/// `FLEETLOG_CONFIG`). Exits as clap does on a bad command line, and with code 2 on a bad file.
pub fn parse_arguments() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = config::config_path(&arguments) {
        command = config::apply_file(command, &path).unwrap_or_else(|error| {
            eprintln!("error: {error:#}");
            std::process::exit(2);
        });
    }
    let matches = command.get_matches_from(arguments);
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

pub async fn run(cli: Cli) -> Result<()> {
    let output = cli.output;
    let ca_pem = match &cli.tls_ca {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read --tls-ca {}", path.display()))?),
        None => None,
    };
    let credentials = Credentials { token: cli.token.clone(), ca_pem };
    match cli.command {
        Command::Serve(args) => return serve::serve(args, credentials.ca_pem).await,
        Command::Dev(args) => return dev::run(output, args).await,
        Command::Agent(args) => return agent::run(&cli.server, &credentials, args).await,
        Command::Token(command) => return token::run(command),
        Command::Completions(args) => {
            completions(args.shell);
            return Ok(());
        }
        _ => {}
    }
    let client = Client::configured(&cli.server, &credentials)?;
    match cli.command {
        Command::Serve(_) | Command::Dev(_) | Command::Agent(_) | Command::Token(_) | Command::Completions(_) => {
            unreachable!("handled above")
        }
        Command::Cluster(command) => cluster::run(&client, output, command).await,
        Command::Release(command) => commands::release(&client, output, command).await,
        Command::Target(command) => commands::target(&client, output, command).await,
        Command::Report(args) => commands::report(&client, output, args).await,
        Command::Deploy(command) => commands::deploy(&client, output, command).await,
        Command::Rollback(args) => commands::rollback(&client, output, args).await,
        Command::Freeze(command) => commands::freeze(&client, output, command).await,
        Command::Policy(command) => commands::policy(&client, output, command).await,
        Command::Webhook(command) => webhook::run(&client, output, command).await,
        Command::Calendar(command) => commands::calendar(&client, output, command).await,
        Command::Alerts(args) => reads::alerts(&client, output, args).await,
        Command::Dora(args) => reads::dora(&client, output, args).await,
        Command::Fleet(args) => reads::fleet(&client, output, args).await,
        Command::Host(args) => reads::host(&client, output, args).await,
        Command::History(args) => reads::history(&client, output, args).await,
        Command::Diff(args) => reads::diff(&client, output, args).await,
        Command::Verify(args) => verify::run(&client, output, args).await,
        Command::Tail(args) => reads::tail(&client, output, args).await,
        Command::Append(args) => commands::append(&client, output, args).await,
    }
}

/// Writes the completion script of `shell`, generated from the same definitions the parser uses,
/// so it never lags behind a new flag.
fn completions(shell: cli::Shell) {
    use clap::CommandFactory;
    let generator = match shell {
        cli::Shell::Bash => clap_complete::Shell::Bash,
        cli::Shell::Zsh => clap_complete::Shell::Zsh,
        cli::Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut Cli::command(), "fleetlog", &mut std::io::stdout());
}
