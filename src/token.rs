//! `fleetlog token create`: a new token and the line that makes a server accept it.

use anyhow::{anyhow, Result};
use fleetlog_api::auth::{create_token, Role};

use crate::cli::{TokenCommand, TokenCreateArgs};

pub fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: TokenCreateArgs) -> Result<()> {
    let role = Role::parse(&args.role)
        .ok_or_else(|| anyhow!("--role {:?} is not a role: admin, deployer, agent or auditor", args.role))?;
    // Said in the flags of this command, not in the token file's `hosts=` form.
    if role == Role::Agent && args.hosts.is_empty() {
        return Err(anyhow!("an agent token must name the hosts it may act for: add --hosts web-1,web-2"));
    }
    if role != Role::Agent && !args.hosts.is_empty() {
        return Err(anyhow!("only agent tokens name hosts: drop --hosts, or use --role agent"));
    }
    let name = match args.name {
        Some(name) => name,
        None => {
            use rand::RngCore;
            let mut suffix = [0u8; 4];
            rand::rngs::OsRng.fill_bytes(&mut suffix);
            format!("{}-{}", role.as_str(), hex::encode(suffix))
        }
    };
    let created = create_token(&name, role, &args.hosts, args.expires.as_deref()).map_err(|error| anyhow!(error))?;
    // The token first (shown once, never stored), then the line for the server's token file.
    println!("{}", created.token);
    println!("{}", created.line);
    Ok(())
}
