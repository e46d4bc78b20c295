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

/// The longest argument weavectl accepts, in bytes.
const MAX_ARG: usize = 4096;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // No argument weavectl takes is anywhere near this long (names 63 bytes,
    // a token description 256); the coordinator's 8 KiB request limit would
    // refuse it with its own words, and the message would quote it whole.
    if let Some(long) = std::env::args_os().skip(1).find(|a| a.len() > MAX_ARG) {
        eprintln!(
            "weavectl: an argument of {} bytes is longer than any weavectl takes (at most {MAX_ARG})",
            long.len()
        );
        return ExitCode::from(failure::Exit::Usage as u8);
    }
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
