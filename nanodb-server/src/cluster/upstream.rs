//! The node `REPLICAOF` names: what this node presents to it (Redis's `masteruser` and
//! `masterauth`) and the short conversation with its RESP port that tells where its Raft port is.
//!
//! # Credentials
//! Set at start (`--masteruser`, `--masterauth`, or their `NANODB_*` variables and config-file
//! keys) and at run time (`CONFIG SET masteruser|masterauth`). When a password is set, the node
//! sends `AUTH [user] pass` before `INFO replication`, as a Redis replica does before `PING`; a
//! user without a password is not sent (Redis ignores `masteruser` without `masterauth` too). A
//! refused `AUTH` fails the `REPLICAOF` before anything on this node changed, with an error that
//! names the target and says that authentication failed.
//!
//! The password is never shown: `CONFIG GET masterauth` answers a mask, `Debug` redacts it, and
//! errors quote only the target's answer (which never echoes a password).
//!
//! # TLS
//! With `--tls-replication yes` (Redis's `tls-replication`) the conversation runs over TLS,
//! trusting `--tls-ca` and presenting `--tls-cert` when the target asks for a client
//! certificate; the target's certificate must name the host given to `REPLICAOF`. Without it the
//! conversation is plaintext, and a target whose RESP port speaks TLS only answers so: the error
//! says to turn `--tls-replication` on.
//!
//! # The Raft `JOIN` that follows
//! Neither credentials nor TLS cover it: the Raft port authenticates no user and is plaintext; it
//! trusts its network and checks cluster ids (see `network`). The credentials prove that whoever
//! runs `REPLICAOF` may read the target's `INFO`; keep the Raft port on a private network.

use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::frontend::resp::encode;

/// Largest `INFO replication` answer read from a target.
const MAX_INFO: usize = 64 << 10;
/// Longest status line read from a target (`+OK`, an error, a bulk length).
const MAX_LINE: u64 = 512;

/// Who this node says it is to its `REPLICAOF` target.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user (`masteruser`); `None` for `default`.
    pub user: Option<String>,
    /// The password (`masterauth`); `None` sends no `AUTH`.
    pub pass: Option<String>,
}

/// Never prints the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `--tls-replication`'s client configuration (see `tls::replication_connector`).
#[derive(Clone)]
pub struct UpstreamTls(pub tokio_rustls::TlsConnector);

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamTls")
    }
}

/// The credentials, changed by `CONFIG SET` while `REPLICAOF` may read them, and TLS.
#[derive(Debug, Default)]
pub struct Upstream {
    credentials: RwLock<Credentials>,
    tls: Option<UpstreamTls>,
}

/// What `CONFIG GET masterauth` shows for a password that is set.
pub const MASK: &str = "******";

impl Upstream {
    /// Starts with `credentials` (the flags'), over TLS when `tls` is given.
    pub fn new(credentials: Credentials, tls: Option<UpstreamTls>) -> Self {
        Self { credentials: RwLock::new(credentials), tls }
    }

    /// The TLS client configuration, with `--tls-replication`.
    pub(super) fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_ref()
    }

    /// A copy of the credentials now.
    pub fn credentials(&self) -> Credentials {
        self.credentials.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sets `masteruser` (empty: none, as Redis's `CONFIG SET masteruser ""`).
    pub fn set_user(&self, user: &str) {
        let mut c = self.credentials.write().unwrap_or_else(PoisonError::into_inner);
        c.user = (!user.is_empty()).then(|| user.to_string());
    }

    /// Sets `masterauth` (empty: none).
    pub fn set_pass(&self, pass: &str) {
        let mut c = self.credentials.write().unwrap_or_else(PoisonError::into_inner);
        c.pass = (!pass.is_empty()).then(|| pass.to_string());
    }

    /// `masteruser` as CONFIG GET shows it (empty when none).
    pub fn shown_user(&self) -> String {
        self.credentials().user.unwrap_or_default()
    }

    /// `masterauth` as CONFIG GET shows it: [`MASK`] when set, empty when not; never the
    /// password.
    pub fn shown_pass(&self) -> &'static str {
        if self.credentials().pass.is_some() { MASK } else { "" }
    }
}

/// What `INFO replication` of a cluster node tells a node that wants to join it.
#[derive(Debug)]
pub(super) struct Target {
    /// Its Raft address.
    pub raft_addr: String,
    /// Its cluster's id, when it belongs to one.
    pub cluster_id: Option<String>,
}

/// `HOST:PORT`, a bare IPv6 host bracketed.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One command as a RESP array of bulk strings (a password may hold any byte, CRLF included),
/// written by the RESP frontend's own encoder.
fn command(parts: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::new();
    encode::array(&mut out, parts.len());
    for p in parts {
        encode::bulk(&mut out, p);
    }
    out
}

/// Reads one status line (at most [`MAX_LINE`] bytes), without its CRLF.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, target: &str) -> Result<String, String> {
    let mut line = String::new();
    (&mut *r).take(MAX_LINE).read_line(&mut line).await.map_err(|e| format!("ERR {target}: {e}"))?;
    if line.is_empty() {
        return Err(format!("ERR {target} closed the connection"));
    }
    Ok(line.trim_end().to_string())
}

/// Asks `host:port` (a RESP address) for its `INFO replication`, authenticating first when
/// `credentials` hold a password: a NanoDB cluster node names its Raft address and cluster id
/// there. Every error is a RESP error line naming the target.
pub(super) async fn ask_info(
    host: &str,
    port: u16,
    upstream: &Upstream,
    deadline: Instant,
) -> Result<Target, String> {
    let target = address(host, port);
    let credentials = upstream.credentials();
    let left = deadline.saturating_duration_since(Instant::now());
    let asked = tokio::time::timeout(left, async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("ERR cannot connect to {target}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let Some(UpstreamTls(tls)) = upstream.tls() else {
            return converse(BufReader::new(stream), &target, &credentials).await;
        };
        // The name checked against the target's certificate: the host as given (a name or an
        // address), as `redis-cli --tls` does.
        let name = rustls_pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("ERR {target}: not a TLS server name: {e}"))?
            .to_owned();
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| format!("ERR {target}: TLS handshake failed (--tls-replication): {e}"))?;
        converse(BufReader::new(stream), &target, &credentials).await
    })
    .await
    .map_err(|_| format!("ERR {target} did not answer AUTH and INFO in time"))??;
    let field = |name: &str| {
        asked
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    let Some(raft_addr) = field("nanodb_raft_addr").filter(|a| !a.is_empty()) else {
        return Err(format!(
            "ERR {target} is not a NanoDB cluster node (its INFO replication names no raft address; start it \
             with --node-id and --raft-addr)"
        ));
    };
    Ok(Target { raft_addr, cluster_id: field("nanodb_cluster_id").filter(|c| !c.is_empty()) })
}

/// The error for a target whose RESP port speaks TLS only (its answer to a plaintext command
/// says so, see `tls::accept`), whichever command met it.
fn tls_only(target: &str, err: &str) -> Option<String> {
    err.contains("speaks TLS only").then(|| {
        format!(
            "ERR {target} requires TLS on its RESP port, and REPLICAOF connects in plaintext: start this node \
             with --tls-replication yes (and --tls-ca, the CA that signed the target's certificate)"
        )
    })
}

/// `AUTH` (when a password is set), then `INFO replication`; the INFO text.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: BufReader<S>,
    target: &str,
    credentials: &Credentials,
) -> Result<String, String> {
    let io = |e: std::io::Error| format!("ERR {target}: {e}");
    if let Some(pass) = &credentials.pass {
        let mut parts: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &credentials.user {
            parts.push(user.as_bytes());
        }
        parts.push(pass.as_bytes());
        stream.get_mut().write_all(&command(&parts)).await.map_err(io)?;
        let line = read_line(&mut stream, target).await?;
        if let Some(err) = line.strip_prefix('-') {
            if let Some(e) = tls_only(target, err) {
                return Err(e);
            }
            let who = credentials.user.as_deref().unwrap_or("default");
            return Err(format!(
                "ERR authentication to {target} failed as user '{who}' (it answered AUTH with: {err}); check \
                 masteruser and masterauth (CONFIG SET, or --masteruser and --masterauth)"
            ));
        }
        if line != "+OK" {
            return Err(format!("ERR {target} is not a Redis-protocol server (AUTH answered {line:?})"));
        }
    }
    stream.get_mut().write_all(&command(&[b"INFO", b"replication"])).await.map_err(io)?;
    let line = read_line(&mut stream, target).await?;
    if let Some(err) = line.strip_prefix('-') {
        if let Some(e) = tls_only(target, err) {
            return Err(e);
        }
        if err.starts_with("NOAUTH") {
            return Err(format!(
                "ERR {target} requires authentication (it answered INFO with: {err}); set masterauth (and \
                 masteruser) with CONFIG SET, or --masterauth and --masteruser"
            ));
        }
        return Err(format!("ERR {target} answered INFO with: {err}"));
    }
    let len: usize = line
        .strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= MAX_INFO)
        .ok_or_else(|| format!("ERR {target} is not a Redis-protocol server (INFO answered {line:?})"))?;
    let mut text = vec![0u8; len];
    stream.read_exact(&mut text).await.map_err(io)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let up = Upstream::new(Credentials { user: Some("repl".into()), pass: Some("s3cret".into()) }, None);
        assert_eq!((up.shown_user(), up.shown_pass()), ("repl".to_string(), MASK));
        assert!(!format!("{up:?}").contains("s3cret"), "{up:?}");
        up.set_pass("");
        up.set_user("");
        assert_eq!((up.shown_user(), up.shown_pass()), (String::new(), ""));
        assert_eq!(up.credentials(), Credentials::default());
    }

    /// A target that reads one command and answers `answer`.
    fn target(answer: &'static [u8]) -> tokio::io::DuplexStream {
        let (client, mut server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let _ = server.read(&mut buf).await;
            let _ = server.write_all(answer).await;
        });
        client
    }

    #[tokio::test]
    async fn refusals_name_the_target_and_never_the_password() {
        let creds = Credentials { user: None, pass: Some("s3cret".into()) };
        let wrong = target(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        let wrong = converse(BufReader::new(wrong), "h:1", &creds).await.expect_err("wrong password");
        assert!(wrong.contains("authentication to h:1 failed as user 'default'"), "{wrong}");
        assert!(wrong.contains("WRONGPASS"), "{wrong}");
        let tls = target(
            b"-ERR this is NanoDB's resp-addr, which speaks TLS only (--tls-cert): connect with TLS\r\n",
        );
        let tls = converse(BufReader::new(tls), "h:1", &creds).await.expect_err("TLS only");
        assert!(tls.contains("h:1 requires TLS"), "{tls}");
        let noauth = target(b"-NOAUTH Authentication required.\r\n");
        let noauth = converse(BufReader::new(noauth), "h:1", &Credentials::default())
            .await
            .expect_err("no credentials");
        assert!(noauth.contains("h:1 requires authentication") && noauth.contains("masterauth"), "{noauth}");
        assert!(![wrong, tls].iter().any(|e| e.contains("s3cret")), "the password is never in an error");
    }

    #[test]
    fn commands_are_bulk_strings_whatever_they_hold() {
        assert_eq!(&command(&[b"AUTH", b"a\r\nb"])[..], b"*2\r\n$4\r\nAUTH\r\n$4\r\na\r\nb\r\n");
        assert_eq!(address("::1", 6379), "[::1]:6379");
        assert_eq!(address("127.0.0.1", 6379), "127.0.0.1:6379");
    }
}
