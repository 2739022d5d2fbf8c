//! TLS for every frontend (`--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-auth-clients`): loading
//! and checking the PEM files, the rustls server configurations (ring provider only, TLS 1.2 and
//! 1.3), the certificate resolver that SIGHUP swaps without dropping connections, and the accept
//! step every frontend runs inside a connection's own task: tell a plaintext client on a TLS port
//! where it is, then the handshake under a deadline.
//!
//! The client-certificate verifier (the CA) is fixed at start; only the server's certificate and
//! key are reloaded.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::config::{ClientAuth, TlsFiles};
use crate::frontend::Context;
use crate::frontend::sniff::{self, Foreign};

/// Why TLS could not be set up: the flag, its file, and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("--{flag} {}: {reason}", path.display())]
pub struct TlsError {
    /// The flag naming the file.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl TlsError {
    fn new(flag: &'static str, path: &Path, reason: impl fmt::Display) -> Self {
        Self { flag, path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// What a listener's clients may negotiate with ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// The binary TCP protocol and RESP: no ALPN.
    None,
    /// REST: HTTP/2 and HTTP/1.1.
    Http,
    /// gRPC: HTTP/2, and HTTP/1.1 for grpc-web (the gRPC listener accepts HTTP/1.1 for it).
    Grpc,
}

/// The server's TLS state: the files, the swappable certificate, one acceptor per ALPN set.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    plain: TlsAcceptor,
    http: TlsAcceptor,
    grpc: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// Hands every handshake the current certificate; [`Tls::reload`] swaps it. Connections already
/// established keep the key they negotiated with.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl Tls {
    /// Reads and checks the files and builds the configurations; the error names the flag, the
    /// file and the reason.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        // ring only (no aws-lc: the build-time rule). rustls 0.23.48 deprecates ring's
        // default provider because it has no post-quantum key exchange; that is the trade taken.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(files, &provider)?;
        let resolver = Arc::new(Resolver { current: RwLock::new(Arc::new(key)) });
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::new("tls-cert", &files.cert, e))?;
        let builder = match (&files.ca, files.auth_clients) {
            (_, ClientAuth::No) => builder.with_no_client_auth(),
            (None, _) => {
                return Err(TlsError::new(
                    "tls-auth-clients",
                    Path::new(if files.auth_clients == ClientAuth::Yes { "yes" } else { "optional" }),
                    "verifying client certificates needs --tls-ca",
                ));
            }
            (Some(ca), auth) => {
                let roots = Arc::new(read_roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                let verifier =
                    if auth == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
                builder
                    .with_client_cert_verifier(verifier.build().map_err(|e| TlsError::new("tls-ca", ca, e))?)
            }
        };
        let base = builder.with_cert_resolver(resolver.clone());
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        Ok(Self {
            files: files.clone(),
            plain: with_alpn(&[]),
            http: with_alpn(&[b"h2", b"http/1.1"]),
            grpc: with_alpn(&[b"h2", b"http/1.1"]),
            provider,
            resolver,
        })
    }

    /// Reads the certificate and key again and serves them to new handshakes. On error the current
    /// ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.files, &self.provider)?;
        *self.resolver.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The acceptor for a listener offering `alpn`.
    pub fn acceptor(&self, alpn: Alpn) -> &TlsAcceptor {
        match alpn {
            Alpn::None => &self.plain,
            Alpn::Http => &self.http,
            Alpn::Grpc => &self.grpc,
        }
    }
}

/// The client side of `--tls-replication`: `REPLICAOF` speaks TLS to its target's RESP port,
/// trusting the CAs of `--tls-ca` (Redis's `tls-ca-cert-file` serves both ways too) and
/// presenting `--tls-cert` when the target asks for a client certificate. Checked at start, as
/// the server's files are.
pub fn replication_connector(files: &TlsFiles) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let Some(ca) = &files.ca else {
        return Err(TlsError::new(
            "tls-replication",
            Path::new("yes"),
            "needs --tls-ca: the CA that signed the certificates of the nodes REPLICAOF connects to",
        ));
    };
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = read_roots(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::new("tls-ca", ca, e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(read_certs("tls-cert", &files.cert)?, read_key(files)?)
        .map_err(|e| TlsError::new("tls-key", &files.key, e))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The private key of `--tls-key`.
fn read_key(files: &TlsFiles) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::new(
            "tls-key",
            &files.key,
            "no private key found (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
        ),
        e => TlsError::new("tls-key", &files.key, pem_reason(e)),
    })
}

/// The certificate chain and key, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs("tls-cert", &files.cert)?;
    let key = read_key(files)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::new(
            "tls-key",
            &files.key,
            format!("does not match the certificate in {}", files.cert.display()),
        ),
        e => TlsError::new("tls-key", &files.key, e),
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::new(flag, path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(TlsError::new(flag, path, "no certificate found (expected a PEM CERTIFICATE block)"));
    }
    Ok(certs)
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("tls-ca", path)? {
        roots.add(cert).map_err(|e| TlsError::new("tls-ca", path, e))?;
    }
    Ok(roots)
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        e => format!("not a valid PEM file ({e})"),
    }
}

/// Most bytes of a plaintext client's first request read to tell what it speaks, and for how long.
const SNIFF_BYTES: usize = 1024;
const SNIFF_TIME: Duration = Duration::from_secs(1);

/// The accept step of a TLS listener, in the connection's own task: waits (at most
/// `handshake_timeout`) for the client's first byte; a client that does not start with a TLS
/// handshake record is told in its own protocol, when recognised, that `port` speaks TLS, and
/// closed; otherwise the handshake runs under the same deadline. `None` when the connection is
/// over (logged at debug level, as every per-connection failure: a misconfigured client may open
/// thousands).
pub async fn accept(
    acceptor: &TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    port: &'static str,
) -> Option<TlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        () = ctx.shutdown.cancelled() => return None,
        peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(1..)) if first[0] == 0x16 => {}
        Ok(Ok(1..)) => {
            let foreign = answer_plaintext(&mut stream, ctx, port).await;
            debug!(%peer, client = foreign.map_or("unrecognised".to_string(), |f| f.to_string()), "{port}: plaintext client on a TLS port; told it and closed");
            return None;
        }
        Ok(Ok(_)) => return None,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "{port}: connection failed before the TLS handshake");
            return None;
        }
        Err(_) => {
            debug!(%peer, "{port}: no TLS handshake within handshake_timeout; closed");
            return None;
        }
    }
    let handshake = tokio::select! {
        () = ctx.shutdown.cancelled() => return None,
        done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => done,
    };
    match handshake {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "{port}: TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "{port}: TLS handshake not done within handshake_timeout; closed");
            None
        }
    }
}

/// Tells a plaintext client on a TLS port, in its protocol, to connect with TLS: an HTTP 400, an
/// HTTP/2 GOAWAY, a RESP error to each command, a binary-protocol error frame; anything else is
/// just closed. Nothing it sent is run.
async fn answer_plaintext(stream: &mut TcpStream, ctx: &Context, port: &str) -> Option<Foreign> {
    let mut first = BytesMut::with_capacity(SNIFF_BYTES);
    let started = Instant::now();
    let foreign = loop {
        if let Some(f) = sniff::identify(&first) {
            break Some(f);
        }
        let left = SNIFF_TIME.saturating_sub(started.elapsed());
        if first.len() >= SNIFF_BYTES || left.is_zero() {
            break None;
        }
        match tokio::time::timeout(left, stream.read_buf(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break None,
        }
    };
    let text = format!("this is NanoDB's {port}, which speaks TLS only (--tls-cert): connect with TLS");
    let answer = match foreign {
        Some(Foreign::Http1) => sniff::http1_response(&text),
        Some(Foreign::Http2) => sniff::http2_goaway(&text),
        Some(Foreign::Resp) => {
            sniff::answer_resp_commands(stream, &first, &text, &ctx.shutdown).await;
            return foreign;
        }
        Some(Foreign::NanoTcp) => sniff::tcp_error_frame(text),
        Some(Foreign::Tls) | None => Vec::new(),
    };
    sniff::answer_and_close(stream, &answer).await;
    foreign
}

/// A connection's byte stream as the frontends that own their sockets see it: split into halves
/// that can be polled at once (RESP's subscribed mode reads and writes concurrently). The plain
/// TCP stream splits for free; a TLS stream through tokio's lock-based split.
pub trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The reading half.
    type Read<'a>: tokio::io::AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The writing half.
    type Write<'a>: tokio::io::AsyncWrite + Unpin + Send
    where
        Self: 'a;
    /// Both halves, borrowed.
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Socket for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;

    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

impl Socket for TlsStream<TcpStream> {
    type Read<'a> = tokio::io::ReadHalf<&'a mut Self>;
    type Write<'a> = tokio::io::WriteHalf<&'a mut Self>;

    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        tokio::io::split(self)
    }
}
