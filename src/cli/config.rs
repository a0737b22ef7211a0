//! `tidemark serve --config FILE`: settings from a TOML file.
//!
//! The file's keys are the `serve` flags without their dashes (`http-bind` or `http_bind`),
//! at the top level. Its values become the defaults of those flags, so the order of
//! precedence is: command line, then `TIDEMARK_*` environment variables, then the file, then
//! the built-in defaults. Unknown keys and values that are not scalars are errors naming the
//! file and the key; a bad value is reported by the flag's own parser.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, Parser};

use super::Cli;

/// Parses the command line, applying `serve --config` (or `TIDEMARK_CONFIG`) when given.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let mut cmd = Cli::command();
    // A first pass only finds the config file; errors are left to the real parse below.
    if let Ok(first) = Cli::try_parse_from(&args)
        && let Some(path) = first.config_file()
    {
        let settings = load(&path, &cmd)?;
        cmd = cmd.mut_subcommand("serve", |mut serve| {
            for (id, value) in settings {
                // clap keeps defaults as 'static; the file is read once per process.
                let value: &'static str = Box::leak(value.into_boxed_str());
                serve = serve.mut_arg(id, |a| a.default_value(value));
            }
            serve
        });
    }
    let matches: ArgMatches = cmd.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The (argument id, value) pairs of a config file, checked against `serve`'s flags.
fn load(path: &Path, cmd: &Command) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let ids: Vec<String> = cmd
        .find_subcommand("serve")
        .map(|s| {
            s.get_arguments()
                .filter(|a| a.get_long().is_some() && a.get_id() != "config")
                .map(|a| a.get_id().to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        if !ids.contains(&id) {
            bail!(
                "config file {}: unknown setting {key:?}; the settings are the `tidemark serve` \
                 flags: {}",
                path.display(),
                ids.iter()
                    .map(|i| i.replace('_', "-"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "config file {}: {key} must be a string, number or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        out.push((id, value));
    }
    Ok(out)
}
