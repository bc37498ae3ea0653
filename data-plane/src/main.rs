//! `data-plane`: reads the node configuration and serves until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gatehouse_data_plane::BoundNode;
use gatehouse_data_plane::config::{Config, Overrides};
use gatehouse_runtime::process;

#[derive(Debug, Parser)]
#[command(
    name = "data-plane",
    version,
    about = "Gatehouse data-plane node (HTTP and WebSocket proxy)"
)]
struct Cli {
    /// TOML configuration file; without one, defaults apply.
    #[arg(long, short, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    overrides: Overrides,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (logs, _traces) = process::start("gatehouse-data-plane");
    let cli = Cli::parse();
    let loaded = Config::load(cli.config.as_deref(), &cli.overrides);
    let config = match process::configuration("data-plane", cli.check_config, loaded) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let node = match BoundNode::bind(config).await {
        Ok(node) => node.with_log_control(logs),
        Err(error) => {
            eprintln!("data-plane: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let (Ok(address), Ok(admin)) = (node.local_addr(), node.admin_addr()) {
        tracing::info!(%address, %admin, "data-plane node listening");
    }
    node.serve(process::shutdown_signal()).await;
    tracing::info!("data-plane node stopped");
    ExitCode::SUCCESS
}
