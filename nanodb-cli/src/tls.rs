//! `--tls` / `--ca`: the client side of TLS (rustls with the ring provider, as the server), one
//! [`TlsStream`]-or-plain [`Stream`] for the binary TCP port and an HTTP/2 connector for gRPC.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The TLS configuration: trusts the CA file given (there is no system trust store).
#[derive(Clone)]
pub struct Tls {
    plain: TlsConnector,
    h2: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Trusts the certificates in the PEM file `ca`.
    pub fn new(ca: &Path) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--ca {}: no PEM CERTIFICATE in it", ca.display());
        }
        for cert in certs {
            roots.add(cert).map_err(|e| anyhow::anyhow!("--ca {}: {e}", ca.display()))?;
        }
        // ring only, as the server.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut h2 = base.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { plain: TlsConnector::from(Arc::new(base)), h2: TlsConnector::from(Arc::new(h2)) })
    }

    async fn connect(&self, tcp: TcpStream, host: &str, h2: bool) -> anyhow::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
            .map_err(|e| anyhow::anyhow!("{host}: not a TLS server name: {e}"))?;
        let connector = if h2 { &self.h2 } else { &self.plain };
        connector.connect(name, tcp).await.map_err(|e| anyhow::anyhow!("{host}: TLS handshake failed: {e}"))
    }
}

/// A connection's stream, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `host:port` with TCP_NODELAY, then TLS when `tls` is given (ALPN h2 for gRPC).
    pub async fn connect(host: &str, port: u16, tls: Option<&Tls>, h2: bool) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
        tcp.set_nodelay(true)?;
        Ok(match tls {
            None => Self::Plain(tcp),
            Some(tls) => Self::Tls(Box::new(tls.connect(tcp, host, h2).await?)),
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
