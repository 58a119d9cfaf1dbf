//! Certificate files to tonic TLS settings.
//!
//! tonic's `tls-ring` feature uses rustls with the ring provider, so TLS needs
//! no system OpenSSL and no C toolchain beyond what ring builds.

use std::{fs, path::Path};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, config::TlsArgs};

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::ReadFile {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// A file of PEM certificates, at least one: a CA bundle or a chain. A file
/// that holds none is refused here, naming the flag, rather than failing
/// every handshake later.
pub(crate) fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let pem = read(flag, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::config(flag, format!("{}: not PEM: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(Error::config(
            flag,
            format!("{}: holds no PEM certificate", path.display()),
        ));
    }
    Ok(pem)
}

impl TlsArgs {
    /// The server-side TLS settings, or `None` for plaintext.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when a file cannot be read.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, Error> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(
            read_certificates("--tls-cert", cert)?,
            read("--tls-key", key)?,
        );
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_certificates(
                "--tls-client-ca",
                ca,
            )?));
        }
        Ok(Some(config))
    }

    /// The client-side TLS settings for calling another Sluice service, or
    /// `None` when no CA was given (plaintext). The process's own certificate
    /// is presented when it has one, for servers that require mutual TLS.
    ///
    /// # Errors
    /// [`Error::ReadFile`] when a file cannot be read.
    pub fn client_config(&self) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read_certificates("--tls-ca", ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(
                read_certificates("--tls-cert", cert)?,
                read("--tls-key", key)?,
            ));
        }
        Ok(Some(config))
    }

    /// True when the servers of this process speak TLS.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// A lazily connecting channel to another Sluice service at `addr`
/// (`host:port`, or a full `http://` / `https://` URI), using TLS when
/// `--tls-ca` is set.
///
/// # Errors
/// [`Error::Config`] naming `flag` for an address that is not a URI.
pub fn channel(
    flag: &'static str,
    addr: &str,
    tls: &TlsArgs,
) -> Result<tonic::transport::Channel, Error> {
    let client_tls = tls.client_config()?;
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else if client_tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| Error::config(flag, format!("`{addr}` is not an address: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(client_tls) = client_tls {
        endpoint = endpoint.tls_config(client_tls)?;
    }
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().expect("dir");
        let junk = dir.path().join("ca.crt");
        std::fs::write(&junk, "not a certificate").expect("write");
        let args = TlsArgs {
            tls_ca: Some(junk.clone()),
            ..TlsArgs::default()
        };
        let Err(error) = args.client_config() else {
            panic!("a junk CA must be refused")
        };
        let text = error.to_string();
        assert!(
            text.contains("--tls-ca") && text.contains("ca.crt"),
            "{text}"
        );
    }
}
