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
