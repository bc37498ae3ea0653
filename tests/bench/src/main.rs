//! `gatehouse-bench`: drives real `redis-server`, `control-plane` and `data-plane` processes
//! on loopback and prints one Markdown table per measurement (BENCHMARKS.md): logins against
//! the Redis limit, revocation propagation to 100 nodes, and data-plane memory.
//!
//! Every process it starts is killed when it exits, on error or Ctrl-C too. Diagnostics go
//! to stderr, the table to stdout; the exit code is non-zero when any figure is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod grpc;
mod logins;
mod memory;
mod processes;
mod revocation;
mod stats;

#[derive(Debug, Parser)]
#[command(name = "gatehouse-bench", about = "Gatehouse benchmark driver")]
struct Cli {
    /// Directory holding the `control-plane` and `data-plane` binaries
    #[arg(long, global = true, default_value = "target/release")]
    bin_dir: PathBuf,
    /// A few seconds with tiny counts: proves the stage runs and produces numbers
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ticket logins per second on Redis, against redis-benchmark; control-plane RSS
    Logins(logins::LoginsArgs),
    /// Delay from DeleteSession to every node refusing the cookie and the WebSocket closing
    Revocation(revocation::RevocationArgs),
    /// Data-plane RSS with cached sessions and idle WebSockets
    Memory(memory::MemoryArgs),
    /// The echo upstream alone, until killed (the `memory` stage runs it as a child)
    #[command(hide = true)]
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of sockets: take every descriptor allowed; children inherit the limit.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("gatehouse-bench: cannot raise the open-file limit: {error}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gatehouse-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&cli) => outcome,
            // Returning drops every process guard, which kills the children.
            signal = terminated() => Err(anyhow::anyhow!("stopped by {signal}")),
        }
    });
    match outcome {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gatehouse-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn terminated() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => term.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term => "SIGTERM",
    }
}

async fn run(cli: &Cli) -> Result<String> {
    let table = match &cli.command {
        Command::Logins(args) => logins::run(&cli.bin_dir, cli.smoke, args).await?,
        Command::Revocation(args) => revocation::run(&cli.bin_dir, cli.smoke, args).await?,
        Command::Memory(args) => memory::run(&cli.bin_dir, cli.smoke, args).await?,
        Command::Upstream { listen } => {
            processes::serve_until_stdin_ends(*listen).await?;
            return Ok(String::new());
        }
    };
    Ok(table.render())
}
