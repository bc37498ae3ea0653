//! The channel to the control plane: plain HTTP/2 on loopback, TLS with --ca, mutual TLS with
//! --cert and --key.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::cli::Connection;

/// What is wrong with the connection flags: bad usage, exit code 64.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A channel that connects on first use, so that a connection failure is reported with the
/// call that needed it, as a gRPC status.
pub fn channel(connection: &Connection) -> Result<Channel, UsageError> {
    let tls_wanted = connection.ca.is_some() || connection.cert.is_some();
    let uri = if connection.endpoint.contains("://") {
        connection.endpoint.clone()
    } else if tls_wanted {
        format!("https://{}", connection.endpoint)
    } else {
        format!("http://{}", connection.endpoint)
    };
    let https = uri.starts_with("https://");
    if !https && !uri.starts_with("http://") {
        return Err(UsageError(format!(
            "--endpoint {uri}: the scheme must be http or https"
        )));
    }
    if !https && tls_wanted {
        return Err(UsageError(format!(
            "--endpoint {uri} is plain http, but --ca or --cert asks for TLS: use https://"
        )));
    }
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|error| UsageError(format!("--endpoint {uri}: {error}")))?
        .timeout(connection.timeout)
        .connect_timeout(connection.timeout);
    if https {
        let Some(ca) = &connection.ca else {
            return Err(UsageError(format!(
                "--endpoint {uri} is https: give the CA that signed the server's certificate with --ca"
            )));
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&connection.cert, &connection.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &connection.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| UsageError(format!("TLS configuration: {error}")))?;
    }
    Ok(endpoint.connect_lazy())
}

fn read(path: &Path) -> Result<Vec<u8>, UsageError> {
    std::fs::read(path)
        .map_err(|error| UsageError(format!("cannot read {}: {error}", path.display())))
}
