//! The client side of TLS, shared by NanoDB's own clients (`nanodb-cli`, `nano-bench`): rustls
//! with the ring provider (as the server), trusting only the CA file given (there is no system
//! trust store on the machines NanoDB targets), and one plain-or-TLS [`Stream`] so the plaintext
//! path stays static dispatch. Behind the `tls-client` feature: the server and clients without
//! TLS do not build rustls for it.
//!
//! Each connection does its own handshake, offering the ALPN its protocol needs ([`Alpn`]).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a TLS client could not be configured or connect; each names the file or target involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsClientError {
    /// The CA file could not be read or parsed.
    #[error("--ca {}: {message}", path.display())]
    Ca {
        /// The file given.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The host part of the target is not a name or address a certificate can name.
    #[error("{target}: not a TLS server name: {message}")]
    ServerName {
        /// HOST:PORT as given.
        target: String,
        /// Why.
        message: String,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// HOST:PORT as given.
        target: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, not a TLS port...).
    #[error("{target}: TLS handshake failed: {source}")]
    Handshake {
        /// HOST:PORT as given.
        target: String,
        /// rustls's reason, as an io::Error.
        source: io::Error,
    },
}

/// Which ALPN protocol a connection offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// None: the binary TCP protocol and RESP.
    None,
    /// `http/1.1`: REST.
    Http1,
    /// `h2`: gRPC.
    H2,
}

/// A TLS client configuration: one per process, cheap to clone (the connectors are shared).
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

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca`, and only those.
    pub fn new(ca: &Path) -> Result<Self, TlsClientError> {
        let ca_error = |message: String| TlsClientError::Ca { path: ca.to_path_buf(), message };
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM CERTIFICATE in it".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
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

    /// Handshakes over `tcp` with the server `target` (HOST:PORT, `[v6]:PORT`; the host is the
    /// name checked against the server's certificate).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        target: &str,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, TlsClientError> {
        let name = ServerName::try_from(host_of(target).to_string())
            .map_err(|e| TlsClientError::ServerName { target: target.into(), message: e.to_string() })?;
        let connector = match alpn {
            Alpn::None => &self.plain,
            Alpn::Http1 => &self.http1,
            Alpn::H2 => &self.h2,
        };
        connector
            .connect(name, tcp)
            .await
            .map_err(|source| TlsClientError::Handshake { target: target.into(), source })
    }
}

/// The host part of `HOST:PORT` or `[v6]:PORT`, without brackets.
fn host_of(target: &str) -> &str {
    let host = match target.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => target,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `HOST:PORT` for a host given alone, bracketing a bare IPv6 address.
pub fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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
    /// Connects to `target` (HOST:PORT) with TCP_NODELAY, then handshakes when `tls` is given.
    pub async fn connect(target: &str, tls: Option<&TlsClient>, alpn: Alpn) -> Result<Self, TlsClientError> {
        let connect_error = |source| TlsClientError::Connect { target: target.into(), source };
        let tcp = TcpStream::connect(target).await.map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_part_a_certificate_names() {
        assert_eq!(host_of("localhost:7070"), "localhost");
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(target("::1", 7070), "[::1]:7070");
        assert_eq!(target("[::1]", 7070), "[::1]:7070");
        assert_eq!(target("db.local", 1), "db.local:1");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("nanodb-tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = TlsClient::new(&empty).expect_err("refused").to_string();
        assert!(err.contains("empty.pem") && err.contains("no PEM CERTIFICATE"), "{err}");
        let missing = TlsClient::new(&dir.join("missing.pem")).expect_err("refused").to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
