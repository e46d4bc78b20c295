//! weavectl: the admin command line for a weave cluster. It finds the admin
//! credential, connects to the coordinator over pinned TLS, and runs one
//! command through the same gRPC API that automation uses.
//!
//! - [`cli`]: the clap command tree (every global flag also a `WEAVE_*` variable).
//! - [`connect`]: where the credential comes from; the pinned channel.
//! - [`commands`]: one module per command group, printing tables or JSON.
//! - [`failure`]: one-line errors and the exit codes scripts branch on.
//! - [`table`]: aligned text tables.
mod cli;
mod commands;
mod connect;
mod failure;
mod table;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2.
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("weavectl: {failure}");
            ExitCode::from(failure.exit as u8)
        }
    }
}
