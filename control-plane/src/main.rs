//! `control-plane`: reads the configuration, serves gRPC until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gatehouse_control_plane::BoundServer;
use gatehouse_control_plane::config::{Config, Overrides};

/// Exit code for bad configuration (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

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
    let (logs, _traces) =
        gatehouse_control_plane::logging::LogControl::install("gatehouse-control-plane");
    gatehouse_control_plane::process::install_crypto_provider();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("control-plane: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
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
    logs: gatehouse_control_plane::logging::LogControl,
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
    server
        .serve(gatehouse_control_plane::process::shutdown_signal())
        .await?;
    tracing::info!("control plane stopped");
    Ok(())
}
