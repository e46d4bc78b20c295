//! `agent`: parse flags, init tracing, run the command, exit with one clear line on failure.
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use weave_agent::daemon::{
    commands,
    config::{Cli, Command},
};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match weave_proto::command_line::parse_or_exit::<Cli>("agent").command {
        // A joined agent becomes `agent run`: the token leaves its command line.
        Command::Join(args) => commands::join(&args).await.and_then(|()| Err(commands::exec_run(&args.run))),
        Command::Run(args) => commands::run(args, weave_proto::stop_signal::stop_requested()).await,
        Command::Reset(args) => commands::reset(args).await,
        Command::Rekey(args) => weave_agent::daemon::rekey::rekey(args).await.map(|s| println!("{s}")),
        Command::Status(args) => commands::status(args).await.map(|s| print!("{s}")),
        Command::Allocate(args) => commands::allocate(args).await.map(|s| print!("{s}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {}", commands::describe(&e));
            match e {
                // Distinct, so that a service manager does not restart it (RestartPreventExitStatus=3).
                weave_agent::error::Error::Removed(_)
                | weave_agent::error::Error::RemovedEarlier(_)
                | weave_agent::error::Error::ForgottenEarlier(_) => ExitCode::from(3),
                // Not restarted by the systemd unit: trying again changes nothing.
                weave_agent::error::Error::Usage(_)
                | weave_agent::error::Error::Token(_)
                | weave_agent::error::Error::JoinDenied(_) => ExitCode::from(2),
                // As weavectl's: a script tells a full subnet (7) from a missing one (4).
                weave_agent::error::Error::Refused(kind, _) => ExitCode::from(kind.exit_code()),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
