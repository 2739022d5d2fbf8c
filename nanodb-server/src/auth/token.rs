//! Signed, expiring bearer tokens for HTTP and gRPC.
//!
//! A token carries the user's name, the user's auth epoch and an expiry, signed with HMAC-SHA256
//! under a secret shared by every node that should accept it. Nothing about a token is stored on
//! the server: any node holding the secret verifies it, and any change to the user (a new
//! password, a disabled account, new permissions) changes the epoch and so revokes every token
//! issued before it.
//!
//! Text form: `ndb1.<payload>.<tag>`, both parts base64url without padding. The payload is the
//! epoch and the expiry (Unix ms) as big-endian `u64`s followed by the user name; the tag is the
//! HMAC of everything before the last dot, so the version prefix is signed too.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix naming this token format; a future format gets a new one.
const PREFIX: &str = "ndb1.";
/// Longest token text accepted, checked before decoding anything: a 255-byte user name, two
/// `u64`s and a 32-byte tag fit comfortably.
pub const MAX_TOKEN_LEN: usize = 512;
/// Fewest secret bytes accepted: HMAC-SHA256's block strength.
pub const MIN_SECRET_LEN: usize = 32;
/// The file a generated secret is kept in, inside the data directory.
pub const SECRET_FILE_NAME: &str = "token-secret";

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user it was issued to.
    pub user: String,
    /// The user's auth epoch when it was issued; a token whose epoch is not the user's current
    /// one is revoked.
    pub epoch: u64,
    /// When it stops being valid, in Unix milliseconds.
    pub expires_at_ms: u64,
}

/// Why a token was refused. The text is safe to show the client: it names no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format (wrong prefix, bad base64, wrong length, too long).
    #[error("malformed token")]
    Malformed,
    /// Its signature does not match: forged, altered, or signed with another secret.
    #[error("invalid token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// Why the token secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read or written.
    #[error("token secret {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds fewer bytes than HMAC-SHA256 needs.
    #[error("token secret {path}: {len} bytes, at least {MIN_SECRET_LEN} needed")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// What it holds (surrounding whitespace trimmed).
        len: usize,
    },
    /// The system's random source failed.
    #[error("token secret: the system random source failed")]
    Random,
}

/// Where the signing secret came from, for the startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--token-secret-file`.
    File(PathBuf),
    /// Generated earlier and kept in the data directory.
    DataDir(PathBuf),
    /// Generated now and kept in the data directory.
    Generated(PathBuf),
    /// Generated now and kept only in memory (no data directory): tokens die with the process.
    Ephemeral,
}

/// The key tokens are signed and verified with.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key over `secret` (at least [`MIN_SECRET_LEN`] bytes; the caller checks).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The key from `--token-secret-file` when given; otherwise the one kept in `data_dir`
    /// (generated there once, mode 0600, on first use); otherwise, with no data directory, a
    /// random key for this process only.
    pub fn load_or_create(
        secret_file: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<(Self, SecretSource), SecretError> {
        if let Some(path) = secret_file {
            let secret = read_secret(path)?;
            return Ok((Self::from_secret(&secret), SecretSource::File(path.to_path_buf())));
        }
        let Some(dir) = data_dir else {
            let secret = random_secret()?;
            return Ok((Self::from_secret(&secret), SecretSource::Ephemeral));
        };
        let path = dir.join(SECRET_FILE_NAME);
        match read_secret(&path) {
            Ok(secret) => Ok((Self::from_secret(&secret), SecretSource::DataDir(path))),
            Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let secret = random_secret()?;
                write_secret(&path, &secret)?;
                Ok((Self::from_secret(&secret), SecretSource::Generated(path)))
            }
            Err(e) => Err(e),
        }
    }

    /// A token for `user` at `epoch`, valid for `ttl` from `now_ms`.
    pub fn issue(&self, user: &str, epoch: u64, now_ms: u64, ttl: Duration) -> String {
        let expires_at_ms = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut payload = Vec::with_capacity(16 + user.len());
        payload.extend_from_slice(&epoch.to_be_bytes());
        payload.extend_from_slice(&expires_at_ms.to_be_bytes());
        payload.extend_from_slice(user.as_bytes());
        let mut text = String::with_capacity(PREFIX.len() + 2 * payload.len() + 48);
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut text);
        let tag = hmac::sign(&self.key, text.as_bytes());
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut text);
        text
    }

    /// The claims of `token` if this key signed it and it has not expired at `now_ms`. The tag
    /// is compared in constant time; nothing is decoded before the length is checked. Whether
    /// the epoch is still the user's is the caller's check (it knows the users).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (payload_text, tag_text) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag_text).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..PREFIX.len() + payload_text.len()];
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        // Signed by us: the payload is one we built, but parse it defensively all the same.
        let payload = URL_SAFE_NO_PAD.decode(payload_text).map_err(|_| TokenError::Malformed)?;
        let (epoch, rest) = payload.split_first_chunk::<8>().ok_or(TokenError::Malformed)?;
        let (expires, user) = rest.split_first_chunk::<8>().ok_or(TokenError::Malformed)?;
        let user = std::str::from_utf8(user).map_err(|_| TokenError::Malformed)?;
        let expires_at_ms = u64::from_be_bytes(*expires);
        if now_ms >= expires_at_ms {
            return Err(TokenError::Expired);
        }
        Ok(Claims { user: user.to_owned(), epoch: u64::from_be_bytes(*epoch), expires_at_ms })
    }
}

/// Reads a secret file: its bytes with surrounding whitespace trimmed (so an editor's newline
/// does not change the key), refused when shorter than [`MIN_SECRET_LEN`]. A file others may read
/// is used with a warning.
fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let io_error = |source| SecretError::Io { path: path.to_path_buf(), source };
    let bytes = fs::read(path).map_err(io_error)?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort { path: path.to_path_buf(), len: secret.len() });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the token secret is readable by other users: anyone who reads it can forge tokens; chmod 600 it");
        }
    }
    Ok(secret)
}

/// 32 random bytes, hex-encoded so the file is text an operator can copy to other nodes.
fn random_secret() -> Result<Vec<u8>, SecretError> {
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw).map_err(|_| SecretError::Random)?;
    Ok(raw.iter().flat_map(|b| [hex_digit(b >> 4), hex_digit(b & 0xf)]).collect())
}

fn hex_digit(nibble: u8) -> u8 {
    b"0123456789abcdef"[usize::from(nibble & 0xf)]
}

/// Creates `path` with mode 0600 holding `secret`, fsyncs it and its directory. Refuses to
/// overwrite: a secret that exists is read, never replaced.
fn write_secret(path: &Path, secret: &[u8]) -> Result<(), SecretError> {
    let io_error = |source| SecretError::Io { path: path.to_path_buf(), source };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(secret).map_err(io_error)?;
    file.write_all(b"\n").map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn key(byte: u8) -> TokenKey {
        TokenKey::from_secret(&[byte; 32])
    }

    #[test]
    fn a_token_verifies_under_its_key_until_it_expires() {
        let token = key(1).issue("alice", 7, NOW, HOUR);
        let claims = key(1).verify(&token, NOW + 1).expect("valid");
        assert_eq!(claims, Claims { user: "alice".into(), epoch: 7, expires_at_ms: NOW + 3_600_000 });
        assert_eq!(key(1).verify(&token, NOW + 3_600_000), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_or_any_altered_character_is_refused() {
        let token = key(1).issue("alice", 7, NOW, HOUR);
        assert_eq!(key(2).verify(&token, NOW), Err(TokenError::BadSignature));
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let Ok(altered) = String::from_utf8(bytes) else { continue };
            if altered == token {
                continue;
            }
            assert!(key(1).verify(&altered, NOW).is_err(), "altered at {i}: {altered}");
        }
    }

    #[test]
    fn a_forged_payload_with_a_copied_tag_is_refused() {
        let token = key(1).issue("alice", 7, NOW, HOUR);
        let tag = token.rsplit_once('.').expect("tag").1;
        let mut payload = Vec::new();
        payload.extend_from_slice(&7u64.to_be_bytes());
        payload.extend_from_slice(&u64::MAX.to_be_bytes());
        payload.extend_from_slice(b"admin");
        let forged = format!("{PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(payload));
        assert_eq!(key(1).verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed_and_long_input_is_refused_before_decoding() {
        for text in ["", "ndb1.", "ndb1.abc", "bearer", "ndb2.AAAA.AAAA", "ndb1.AAAA.!!!!"] {
            assert_eq!(key(1).verify(text, NOW), Err(TokenError::Malformed), "{text:?}");
        }
        for text in ["ndb1..", "ndb1.AAAA.AAAA"] {
            assert_eq!(key(1).verify(text, NOW), Err(TokenError::BadSignature), "{text:?}");
        }
        let long = format!("{PREFIX}{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(key(1).verify(&long, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn a_generated_secret_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, source) = TokenKey::load_or_create(None, Some(dir.path())).expect("create");
        let path = dir.path().join(SECRET_FILE_NAME);
        assert_eq!(source, SecretSource::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, source) = TokenKey::load_or_create(None, Some(dir.path())).expect("reload");
        assert_eq!(source, SecretSource::DataDir(path));
        let token = first.issue("bob", 1, NOW, HOUR);
        assert!(second.verify(&token, NOW).is_ok(), "the same secret after a restart");
    }

    #[test]
    fn an_explicit_secret_file_wins_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
        let (a, source) = TokenKey::load_or_create(Some(&path), Some(dir.path())).expect("load");
        assert_eq!(source, SecretSource::File(path.clone()));
        let (b, _) = TokenKey::load_or_create(Some(&path), None).expect("load again");
        assert!(b.verify(&a.issue("n", 0, NOW, HOUR), NOW).is_ok(), "two nodes sharing a file");
        assert!(!dir.path().join(SECRET_FILE_NAME).exists(), "nothing generated");
        fs::write(&path, "short").expect("write");
        let err = TokenKey::load_or_create(Some(&path), None).expect_err("too short");
        assert!(err.to_string().contains("at least 32"), "{err}");
        let missing = TokenKey::load_or_create(Some(&dir.path().join("nope")), None).expect_err("missing");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
