//! `graph-emulator`: the Microsoft Graph + Entra token emulator as a standalone process, for
//! demos and for running hookhost by hand against a fake tenant.
//!
//! Prints `graph-emulator listening on http://127.0.0.1:PORT` once it accepts requests, then
//! serves until SIGINT or SIGTERM. Point graph-guest's `graph_url` and `login_url` at that URL.
//! State is visible at `GET /_emulator/users`, `/_emulator/journal` and `/_emulator/invitations`;
//! `POST /_emulator/faults` queues a fault, e.g. `{"kind":"throttle","times":1,"retry_after":"2"}`.
//! Options: `graph-emulator --help` (see `hookhost_tests::graph_emulator::cli::Args`).

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use hookhost_tests::graph_emulator::cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let emulator = cli::start(cli::Args::parse()).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "graph-emulator listening on {}", emulator.base_url()).context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    cli::stop_signal().await?;
    emulator.shutdown().await;
    Ok(())
}
