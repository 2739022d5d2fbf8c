//! `--tls` / `--ca`: the client side of TLS for every protocol (rustls with the ring provider,
//! trusting the CA file given; there is no system trust store). One [`TlsClient`] per run; each
//! connection does its own handshake, offering the ALPN its protocol needs (none for tcp and
//! resp, `http/1.1` for http, `h2` for grpc).

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

/// The TLS client configuration of a run.
#[derive(Clone)]
pub struct TlsClient {
    plain: TlsConnector,
    http1: TlsConnector,
    h2: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

/// Which ALPN a connection offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// tcp, resp.
    None,
    /// http.
    Http1,
    /// grpc.
    H2,
}

impl TlsClient {
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
        // ring only, as the server (deprecated in rustls 0.23.48 for lacking post-quantum kx).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let base = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let with = |alpn: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(config))
        };
        Ok(Self { plain: with(&[]), http1: with(&[b"http/1.1"]), h2: with(&[b"h2"]) })
    }

    /// Handshakes over `tcp` with the server `target` (HOST:PORT; the host is the name checked
    /// against the certificate).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        target: &str,
        alpn: Alpn,
    ) -> anyhow::Result<TlsStream<TcpStream>> {
        let host = match target.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => target,
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| anyhow::anyhow!("{target}: not a TLS server name: {e}"))?;
        let connector = match alpn {
            Alpn::None => &self.plain,
            Alpn::Http1 => &self.http1,
            Alpn::H2 => &self.h2,
        };
        connector.connect(name, tcp).await.map_err(|e| anyhow::anyhow!("{target}: TLS handshake failed: {e}"))
    }
}

/// A connection's stream, plain or TLS: an enum, so the plaintext path stays static dispatch.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects to `target` with TCP_NODELAY, then TLS when `tls` is given.
    pub async fn connect(target: &str, tls: Option<&TlsClient>, alpn: Alpn) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        Ok(match tls {
            None => Self::Plain(tcp),
            Some(tls) => Self::Tls(Box::new(tls.connect(tcp, target, alpn).await?)),
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
