//! `control-plane`: reads the configuration, serves gRPC until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gatehouse_control_plane::BoundServer;
use gatehouse_control_plane::config::{Config, Overrides};
use gatehouse_control_plane::logging::LogControl;
use gatehouse_control_plane::process;

#[derive(Debug, Parser)]
#[command(
    name = "control-plane",
    version,
    about = "Gatehouse control plane (gRPC)"
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
    let (logs, _traces) = process::start("gatehouse-control-plane");
    let cli = Cli::parse();
    let loaded = Config::load(cli.config.as_deref(), &cli.overrides);
    let config = match process::configuration("control-plane", cli.check_config, loaded) {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    match run(config, cli.config, cli.overrides, logs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("control-plane: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    file: Option<PathBuf>,
    overrides: Overrides,
    logs: LogControl,
) -> anyhow::Result<()> {
    let mut server = BoundServer::bind(&config).await?.with_log_control(logs);
    if let Some(file) = file {
        server = server.reload_from(file, overrides);
    }
    tracing::info!(
        address = %server.local_addr()?,
        store = ?config.store.backend,
        virtual_proxies = config.virtual_proxies.len(),
        "control plane listening"
    );
    server.serve(process::shutdown_signal()).await?;
    tracing::info!("control plane stopped");
    Ok(())
}
