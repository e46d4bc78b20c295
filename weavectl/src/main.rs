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

/// `print!` to stdout that never panics: when the reader is gone
/// (`weavectl ipam ls | head -1`) weavectl ends quietly, as it had nothing
/// more to say; any other failure (a full disk) is one line and exit 1.
macro_rules! out {
    ($($t:tt)*) => { $crate::write_out(format_args!($($t)*)) };
}
pub(crate) use out;

/// Writes to stdout and flushes.
pub(crate) fn try_out(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args).and_then(|()| stdout.flush())
}

pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = try_out(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("weavectl: cannot write the output: {e}");
        std::process::exit(failure::Exit::Other as i32);
    }
}

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
    let cli: cli::Cli = weave_proto::command_line::parse_or_exit("weavectl");
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("weavectl: {failure}");
            ExitCode::from(failure.exit as u8)
        }
    }
}
