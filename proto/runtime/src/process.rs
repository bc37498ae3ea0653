//! What every Gatehouse binary does to its process: the logger and one crypto provider for
//! all of TLS first, the same answer to a bad configuration, and the signals that end it.

use std::fmt::Display;
use std::process::ExitCode;

use crate::logging::{LogControl, TraceExport};

/// Exit code for bad configuration (EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// The first thing in `main`, inside the Tokio runtime: installs the logger (and trace
/// export; `service` names the process in traces), then the crypto provider.
pub fn start(service: &'static str) -> (LogControl, TraceExport) {
    let logging = LogControl::install(service);
    install_crypto_provider();
    logging
}

/// The loaded configuration, or how `binary` ends instead: exit 64 with one line on stderr
/// when it is not valid, success after saying so when `check_only` (`--check-config`).
pub fn configuration<C, E: Display>(
    binary: &str,
    check_only: bool,
    loaded: Result<C, E>,
) -> Result<C, ExitCode> {
    match loaded {
        Err(error) => {
            eprintln!("{binary}: {error}");
            Err(ExitCode::from(EXIT_BAD_CONFIG))
        }
        Ok(_) if check_only => {
            println!("configuration is valid");
            Err(ExitCode::SUCCESS)
        }
        Ok(config) => Ok(config),
    }
}

/// Installs rustls's `ring` provider for the whole process, once, explicitly.
pub fn install_crypto_provider() {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a crypto provider was already installed");
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
