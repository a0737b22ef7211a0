//! `tidemark write`: line protocol from a file or standard input to a server.
//!
//! Input is sent in requests of at most `--batch-bytes`, cut at line ends, so that files
//! larger than the server's request limit can be written. (A cut never falls inside a line
//! unless a quoted string value spans lines and the chunk boundary lands in it.)

use std::io::Read;
use std::process::ExitCode;

use super::{ClientArgs, check};

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Timestamp precision of the input: ns, us, ms or s.
    #[arg(long, env = "TIDEMARK_PRECISION", default_value = "ns")]
    precision: String,
    /// Largest request sent, in bytes.
    #[arg(long, env = "TIDEMARK_BATCH_BYTES", default_value_t = 4 * 1024 * 1024)]
    batch_bytes: usize,
    /// File of line protocol, or - for standard input.
    #[arg(default_value = "-")]
    file: String,
}

pub fn run(args: WriteArgs) -> anyhow::Result<ExitCode> {
    let mut data = Vec::new();
    if args.file == "-" {
        std::io::stdin().read_to_end(&mut data)?;
    } else {
        std::fs::File::open(&args.file)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", args.file))?
            .read_to_end(&mut data)?;
    }
    let url = format!("{}/api/v3/write_lp", args.client.host.trim_end_matches('/'));
    let client = super::http_client()?.build()?;
    let mut rest = &data[..];
    let mut requests = 0;
    let mut failed = false;
    while !rest.is_empty() {
        let mut cut = rest.len().min(args.batch_bytes.max(1));
        if cut < rest.len() {
            cut = rest[..cut]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(cut, |i| i + 1);
        }
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        let resp = client
            .post(&url)
            .query(&[
                ("db", args.client.db.as_str()),
                ("precision", args.precision.as_str()),
            ])
            .body(chunk.to_vec())
            .send()?;
        requests += 1;
        if let Err(e) = check(resp) {
            eprintln!("request {requests}: {e}");
            failed = true;
        }
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    println!("wrote {} bytes in {requests} request(s)", data.len());
    Ok(ExitCode::SUCCESS)
}
