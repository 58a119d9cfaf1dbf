//! Plain HTTP servers (admin endpoints, the simulator's Kubernetes API)
//! with the same TLS as the gRPC servers.

use std::sync::Arc;

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{Error, config::TlsArgs};

/// Rustls settings for an HTTP server from the TLS flags, or `None` for
/// plaintext; client certificates are required when `--tls-client-ca` is set.
///
/// # Errors
/// [`Error::Config`] naming the flag whose file does not hold what it should.
pub fn tls_acceptor(tls: &TlsArgs) -> Result<Option<TlsAcceptor>, Error> {
    let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) else {
        return Ok(None);
    };
    let pem = |flag: &'static str, e: rustls_pki_types::pem::Error| {
        Error::config(flag, format!("not PEM: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem("--tls-cert", e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem("--tls-key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("--tls-cert", e.to_string()))?;
    let builder = match &tls.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem("--tls-client-ca", e))? {
                roots
                    .add(cert.map_err(|e| pem("--tls-client-ca", e))?)
                    .map_err(|e| Error::config("--tls-client-ca", e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::config("--tls-client-ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Error::config("--tls-key", e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `stop`.
///
/// # Errors
/// An accept error on the listener.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(acceptor) = tls else {
        return axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    };
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}
