//! The binary TCP protocol over TLS from Rust: `nanodb_protocol::ClientCodec` framed over a
//! tokio-rustls stream (ring provider), trusting the CA that signed the server's certificate.
//!
//! ```sh
//! nanodb-server --tls-cert server.crt --tls-key server.key
//! cargo run -p nanodb-server --example tls_client -- 127.0.0.1:7070 ca.crt
//! # a server with users: AUTH right after HELLO
//! cargo run -p nanodb-server --example tls_client -- 127.0.0.1:7070 ca.crt alice alicepw
//! ```
//! (With `--tls-ca` and `--tls-auth-clients yes` on the server, the client also needs its own
//! certificate: `with_client_auth_cert(chain, key)` in place of `with_no_client_auth()`.)

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nanodb_protocol::wire::PROTOCOL_VERSION;
use nanodb_protocol::{ClientCodec, Command, Expiry, PutCondition, Request, Response, cmd};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let ca = args.next().unwrap_or_else(|| "ca.crt".into());
    let user = args.next();
    let password = args.next().unwrap_or_default();

    // Trust the CA; verify the server's name (an IP address works if the certificate names it).
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    #[allow(deprecated)] // ring's provider: no aws-lc in this project
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let name = ServerName::try_from(host.to_string())?;
    let tls = TlsConnector::from(Arc::new(config)).connect(name, TcpStream::connect(&addr).await?).await?;

    // From here on it is the plaintext protocol: HELLO, then requests by id.
    let mut framed = Framed::new(tls, ClientCodec::default());
    framed.send((0, Request::Hello { version: PROTOCOL_VERSION })).await?;
    let hello = framed.next().await.ok_or("closed during HELLO")??;
    println!("HELLO: {hello:?}");
    if let Some(user) = user {
        // A server with --requirepass or --users-file answers anything else with NOAUTH.
        let password = nanodb_protocol::wire::Password(Bytes::from(password.into_bytes()));
        framed.send((0, Request::Auth { user: Bytes::from(user.into_bytes()), password })).await?;
        let auth = framed.next().await.ok_or("closed during AUTH")??;
        println!("AUTH: {auth:?}");
    }
    let put = Command::Put(cmd::Put {
        key: Bytes::from_static(b"app:greeting"),
        value: Bytes::from_static(b"hello over TLS"),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    });
    framed.send((1, put)).await?;
    framed.send((2, Command::Get(cmd::Get { key: Bytes::from_static(b"app:greeting") }))).await?;
    for _ in 0..2 {
        match framed.next().await.ok_or("closed")?? {
            (id, Response::Reply(reply)) => println!("{id}: {reply:?}"),
            (id, other) => println!("{id}: {other:?}"),
        }
    }
    Ok(())
}
