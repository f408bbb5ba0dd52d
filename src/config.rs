//! `--config FILE`: a TOML file every flag can come from. Top-level keys are the global flags
//! (`server`, `token`, `tls-ca`, `output`); a table per command holds that command's flags
//! (`[serve]`, `[agent]`, `[deploy.start]`). Keys are the long flag names, with `-` or `_`.
//!
//! The file's values become the flags' defaults, so clap's own order decides: a flag given on the
//! command line wins over its environment variable, which wins over the file, which wins over the
//! built-in default. Every key is checked against the command it names and every value against
//! the flag's parser, with the file and key in the message: a typo fails the start instead of
//! being ignored.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Arg, ArgAction, Command};

/// The environment variable that names a config file when `--config` is not given.
pub const CONFIG_ENV: &str = "FLEETLOG_CONFIG";

/// The config file named by `--config FILE` / `--config=FILE` in `arguments`, else by
/// `FLEETLOG_CONFIG`. The flag is looked for before clap parses, because the file changes
/// what clap is given; arguments after `--` are not flags.
pub fn config_path(arguments: &[OsString]) -> Option<PathBuf> {
    let mut words = arguments.iter().skip(1).take_while(|word| word.as_os_str() != OsStr::new("--"));
    while let Some(word) = words.next() {
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.to_str().and_then(|word| word.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(CONFIG_ENV).filter(|path| !path.is_empty()).map(PathBuf::from)
}

/// `command` with the defaults the file at `path` sets.
pub fn apply_file(command: Command, path: &Path) -> Result<Command> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table =
        text.parse().map_err(|error| anyhow!("config file {} is not valid TOML: {error}", path.display()))?;
    apply_table(command, &table, &[]).map_err(|error| anyhow!("config file {}: {error:#}", path.display()))
}

/// Applies one table to `command`: scalar and array keys are its flags, tables its subcommands.
/// `at` is the table's path (`["deploy", "start"]`), for messages.
fn apply_table(mut command: Command, table: &toml::Table, at: &[&str]) -> Result<Command> {
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            if command.find_subcommand(key).is_none() {
                bail!("[{}] names no command: `{}` has no subcommand `{key}`", joined(at, key), command_name(at));
            }
            let path: Vec<&str> = at.iter().copied().chain([key.as_str()]).collect();
            let mut failure = None;
            command = command.mut_subcommand(key, |subcommand| match apply_table(subcommand.clone(), inner, &path) {
                Ok(applied) => applied,
                Err(error) => {
                    failure = Some(error);
                    subcommand
                }
            });
            if let Some(error) = failure {
                return Err(error);
            }
            continue;
        }
        command = set_default(command, key, value, at)?;
    }
    Ok(command)
}

/// Makes `value` the default of the flag `key` of `command`, after checking it as the flag would.
fn set_default(command: Command, key: &str, value: &toml::Value, at: &[&str]) -> Result<Command> {
    let long = key.replace('_', "-");
    let place = if at.is_empty() { format!("`{key}`") } else { format!("`{key}` in [{}]", at.join(".")) };
    let Some(argument) = command.get_arguments().find(|argument| argument.get_long() == Some(long.as_str())) else {
        bail!("{place}: `{}` has no flag --{long}", command_name(at));
    };
    let values: Vec<String> = match value {
        toml::Value::Array(items) => {
            if !matches!(argument.get_action(), ArgAction::Append) {
                bail!("{place}: --{long} takes one value, not a list");
            }
            items
                .iter()
                .map(|item| scalar(item).with_context(|| format!("{place}: a list of values")))
                .collect::<Result<_>>()?
        }
        other => vec![scalar(other).with_context(|| place.clone())?],
    };
    // The flag's own parser, on a one-argument command: what clap would say, said with the key.
    let checker = Command::new("check")
        .no_binary_name(true)
        .arg(Arg::new("value").value_parser(argument.get_value_parser().clone()).allow_hyphen_values(true));
    for text in &values {
        checker.clone().try_get_matches_from([text]).map_err(|error| {
            let message = error.to_string();
            let first_line = message.lines().next().unwrap_or_default().trim_start_matches("error: ");
            anyhow!("{place}: {}", first_line.replace(" for '<value>'", ""))
        })?;
    }
    let id = argument.get_id().clone();
    // A value from the file satisfies a required flag, as the flag itself would.
    Ok(command.mut_arg(id, |argument| argument.required(false).default_values(values)))
}

/// A TOML value as the text a flag would be given.
fn scalar(value: &toml::Value) -> Result<String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        toml::Value::Datetime(time) => Ok(time.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => bail!("expected a string, number or boolean"),
    }
}

fn command_name(at: &[&str]) -> String {
    std::iter::once("fleetlog").chain(at.iter().copied()).collect::<Vec<_>>().join(" ")
}

fn joined(at: &[&str], key: &str) -> String {
    at.iter().copied().chain([key]).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::{Cli, Command as CliCommand};

    fn parse(file: &str, arguments: &[&str]) -> Result<Cli> {
        let table: toml::Table = file.parse()?;
        let command = apply_table(Cli::command(), &table, &[])?;
        let matches = command.try_get_matches_from(arguments)?;
        Ok(Cli::from_arg_matches(&matches)?)
    }

    #[test]
    fn the_file_fills_flags_the_command_line_does_not_give() {
        let file = "server = \"http://10.0.0.1:7070\"\n[serve]\nlisten = \"127.0.0.1:9000\"\nnode_id = 3\npeer-route = [\"1=a:1\", \"2=b:2\"]\n";
        let cli = parse(file, &["fleetlog", "serve", "--node-id", "4"]).unwrap();
        assert_eq!(cli.server, "http://10.0.0.1:7070");
        let CliCommand::Serve(serve) = cli.command else { panic!("not serve") };
        assert_eq!((serve.listen.as_str(), serve.node_id), ("127.0.0.1:9000", Some(4)));
        assert_eq!(serve.peer_routes, ["1=a:1", "2=b:2"]);
    }

    #[test]
    fn a_switch_can_be_set_in_the_file() {
        let on = |file: &str| match parse(file, &["fleetlog", "serve"]).unwrap().command {
            CliCommand::Serve(serve) => serve.insecure_open,
            _ => panic!("not serve"),
        };
        assert!(on("[serve]\ninsecure-open = true\n"));
        assert!(!on("[serve]\ninsecure-open = false\n"));
        assert!(!on(""));
    }

    #[test]
    fn a_required_flag_can_come_from_the_file() {
        let file = "[agent]\nhost = \"web-1\"\nservice = \"shop\"\nenv = \"prod\"\nexec = \"true\"\n";
        let cli = parse(file, &["fleetlog", "agent"]).unwrap();
        let CliCommand::Agent(agent) = cli.command else { panic!("not agent") };
        assert_eq!((agent.host.as_str(), agent.exec.as_str()), ("web-1", "true"));
    }

    #[test]
    fn mistakes_name_the_key_and_the_command() {
        let error = |file: &str| format!("{:#}", parse(file, &["fleetlog", "serve"]).unwrap_err());
        assert!(error("[serve]\nlisen = \"x\"\n").contains("`lisen` in [serve]: `fleetlog serve` has no flag --lisen"));
        assert!(error("[serv]\nlisten = \"x\"\n").contains("[serv] names no command"));
        assert!(error("[serve]\nnode-id = \"three\"\n").contains("`node-id` in [serve]: invalid value 'three'"));
        assert!(error("[serve]\nlisten = [\"a\", \"b\"]\n").contains("--listen takes one value, not a list"));
        assert!(error("output = \"yaml\"\n").contains("`output`: invalid value 'yaml'"));
    }

    #[test]
    fn the_path_comes_from_the_flag_before_the_environment() {
        let words = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&words("fleetlog --config /etc/a.toml serve")), Some(PathBuf::from("/etc/a.toml")));
        assert_eq!(config_path(&words("fleetlog serve --config=/etc/b.toml")), Some(PathBuf::from("/etc/b.toml")));
        assert_eq!(
            config_path(&words("fleetlog append -- --config x")),
            std::env::var_os(CONFIG_ENV).map(PathBuf::from)
        );
    }
}
