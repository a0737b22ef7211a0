//! `tidemark token create|list|revoke`: API tokens of a server started with `--auth`.
//!
//! With `--data-dir` the command works on the data directory's token store itself: that is
//! how the first admin token is made (a running server on that directory picks the change
//! up). Without it, it asks a running server over HTTP, with an admin token (`--token`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use tidemark_storage::tokens::{Permission, TokenInfo, TokenSpec, TokenStore};

use super::admin::{HostArg, print, send};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only once; only its hash is kept).
    Create(CreateArgs),
    /// List the tokens: id, name and rights (never the token texts).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token at once, by id.
    Revoke {
        /// The token's id (from `tidemark token list`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the tokens are: a data directory, or a running server.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Work on this data directory's token store directly (no server needed; a server
    /// running on it sees the change). Without it, ask the server at --host.
    #[arg(long, env = "TIDEMARK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostArg,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// An admin token: every endpoint, tokens included.
    #[arg(long)]
    admin: bool,
    /// A database (or topic) the token applies to; repeat or separate with commas; `*`
    /// for all.
    #[arg(long = "database", value_delimiter = ',')]
    databases: Vec<String>,
    /// The token may query the databases and read the topics.
    #[arg(long)]
    read: bool,
    /// The token may write to the databases (and delete rows) and produce to the topics.
    #[arg(long)]
    write: bool,
    /// A name to recognise the token by in lists and logs.
    #[arg(long, default_value = "")]
    name: String,
    #[command(flatten)]
    target: Target,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(args) => create(args),
        TokenCommand::List { target } => match &target.data_dir {
            Some(dir) => {
                let store = open(dir)?;
                let tokens: Vec<Value> = store.list().iter().map(TokenInfo::summary).collect();
                print(&serde_json::to_string_pretty(&json!({ "tokens": tokens }))?)
            }
            None => print(&send(
                Method::GET,
                &target.host,
                "/api/v3/configure/token",
                &[],
                None,
            )?),
        },
        TokenCommand::Revoke { id, target } => match &target.data_dir {
            Some(dir) => {
                if open(dir)?.revoke(&id)? {
                    println!("revoked token {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    anyhow::bail!("no token with id {id:?} in {}", dir.display())
                }
            }
            None => {
                send(
                    Method::DELETE,
                    &target.host,
                    "/api/v3/configure/token",
                    &[("id", &id)],
                    None,
                )?;
                println!("revoked token {id}");
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

fn open(dir: &std::path::Path) -> anyhow::Result<TokenStore> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} is not a data directory (start the server on it once first)",
        dir.display()
    );
    TokenStore::open(dir).with_context(|| format!("opening the token store of {}", dir.display()))
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let mut permissions = Vec::new();
    if args.read {
        permissions.push(Permission::Read);
    }
    if args.write {
        permissions.push(Permission::Write);
    }
    if !args.admin {
        anyhow::ensure!(
            !args.databases.is_empty() && !permissions.is_empty(),
            "a token is --admin, or names --database (or '*') with --read and/or --write"
        );
    }
    let (text, id) = match &args.target.data_dir {
        Some(dir) => {
            let mut store = open(dir)?;
            let new = store.create(TokenSpec {
                name: args.name,
                admin: args.admin,
                databases: args.databases,
                permissions,
            })?;
            (new.text, new.info.id)
        }
        None => {
            let body = json!({
                "name": args.name,
                "admin": args.admin,
                "databases": args.databases,
                "permissions": permissions,
            });
            let answer = send(
                Method::POST,
                &args.target.host,
                "/api/v3/configure/token",
                &[],
                Some(body),
            )?;
            let v: Value = serde_json::from_str(&answer)?;
            (
                v["token"].as_str().unwrap_or_default().to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    eprintln!("token {id} created; it is shown only now, so keep it safe:");
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
