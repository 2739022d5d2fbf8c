//! Users, permissions and authentication, shared by every protocol (`ctx.auth`).
//!
//! - `rules.rs`: one [`User`] and the Redis ACL rules that shape it; compiled patterns.
//! - `file.rs`: the users file (`--users-file`): parse with `FILE:LINE: reason`, save atomically.
//! - `header.rs`: the `Authorization` header's schemes and the caller it makes (REST and gRPC).
//! - `token.rs`: signed, expiring bearer tokens for HTTP and gRPC, and their secret.
//! - `check.rs`: the one authorization check ([`Caller::authorize`] of a [`Need`]), which
//!   `Context` runs before the engine applies anything.
//! - this file: the registry [`Auth`]: who exists, authentication (passwords as SHA-256 digests,
//!   compared in constant time), `ACL SETUSER`/`DELUSER`/`LOAD`/`SAVE`, failure counts.
//!
//! A connection resolves its [`Principal`] once (at AUTH, or once per distinct `Authorization`
//! header value on HTTP/gRPC); each check then reads the user's current rules under a read lock,
//! so an `ACL SETUSER` applies to live connections at their next request. Every change to a user
//! gives it a new, larger epoch ([`Principal::epoch`]): what a signed token records to be revoked
//! by any change. With neither `--requirepass` nor `--users-file`, auth is off and every caller is
//! allowed everything: the check is one branch.

mod check;
pub mod file;
pub mod header;
pub mod rules;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub use self::check::{Caller, Need};
pub use self::rules::{RuleError, User};
use self::token::{TokenError, TokenKey};
use crate::stats::Protocol;

/// Why authentication failed (deliberately one reason: which part was wrong is not told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user, wrong password, or a disabled user.
    WrongPass,
}

impl From<AuthError> for nanodb_protocol::Error {
    fn from(_: AuthError) -> Self {
        Self::WrongPass
    }
}

/// An authenticated user: its name and a live view of its rules and epoch.
#[derive(Debug, Clone)]
pub struct Principal(Arc<Account>);

#[derive(Debug)]
struct Account {
    name: String,
    user: RwLock<Arc<User>>,
    epoch: AtomicU64,
    /// A digest of the user's definition ([`User::describe`]): what tokens record. Unlike the
    /// epoch it is the same on every node with the same users and across restarts, so a token
    /// works wherever its user is defined alike, and any change to the user revokes it.
    fingerprint: AtomicU64,
}

/// The first 8 bytes of SHA-256 of the user's definition (rules, password digests, on/off).
fn fingerprint(user: &User) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, user.describe().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Principal {
    /// The user's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The user's epoch: changes (grows) whenever anything about the user changes, including its
    /// deletion.
    pub fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::Acquire)
    }

    /// A digest of the user's current definition, the same on every node that defines the user
    /// alike: what a token carries as its auth epoch.
    pub fn fingerprint(&self) -> u64 {
        self.0.fingerprint.load(Ordering::Acquire)
    }

    /// The user's current rules.
    pub fn user(&self) -> Arc<User> {
        self.with_user(|u| Arc::new(u.clone()))
    }

    fn with_user<T>(&self, f: impl FnOnce(&User) -> T) -> T {
        let guard = self.0.user.read().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    /// The user's rules and the epoch they belong to, read together (the epoch changes under
    /// the same lock as the rules), for a caller to check against without locking.
    pub(crate) fn snapshot(&self) -> (Arc<User>, u64) {
        let guard = self.0.user.read().unwrap_or_else(PoisonError::into_inner);
        (guard.clone(), self.0.epoch.load(Ordering::Acquire))
    }

    fn replace(&self, user: User, epoch: u64) {
        let print = fingerprint(&user);
        let mut guard = self.0.user.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Arc::new(user);
        // Under the lock: a snapshot never pairs new rules with an old epoch or the reverse.
        self.0.fingerprint.store(print, Ordering::Release);
        self.0.epoch.store(epoch, Ordering::Release);
    }
}

/// Successful `Authorization: Basic` header values remembered, so a request does not pay a
/// base64 decode and a SHA-256 each; cleared when full.
const BASIC_CACHE: usize = 1024;

/// The users registry: see the module documentation.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    users: RwLock<BTreeMap<String, Principal>>,
    /// Epochs come from one counter seeded with the start time in ms, so they grow across
    /// restarts too (a token from before a restart never matches a later change).
    epochs: AtomicU64,
    file: Option<PathBuf>,
    requirepass: Option<String>,
    failures: [AtomicU64; 4],
    warned: Mutex<(Option<Instant>, u64)>,
    basic: RwLock<BasicCache>,
    /// The token signer, attached once the data directory is open (see [`Auth::attach_tokens`]).
    tokens: OnceLock<Tokens>,
    bearer: RwLock<BearerCache>,
}

/// `Authorization: Basic` values that succeeded: the principal and its epoch then.
type BasicCache = HashMap<Box<[u8]>, (Principal, u64), ahash::RandomState>;

/// Bearer tokens that verified: the principal, its fingerprint then, and the token's expiry.
type BearerCache = HashMap<Box<[u8]>, (Principal, u64, u64), ahash::RandomState>;

/// What issues and verifies tokens: the key and how long a new token lives.
#[derive(Debug)]
pub struct Tokens {
    /// The signing key.
    pub key: TokenKey,
    /// `--token-ttl`.
    pub ttl: Duration,
}

/// Why no token is issued while authentication is off (no signer is attached then).
pub fn tokens_off() -> nanodb_protocol::Error {
    nanodb_protocol::Error::InvalidArgument(
        "authentication is off (no --requirepass or --users-file): no token is needed".into(),
    )
}

/// Now, in Unix milliseconds (tokens carry wall-clock expiries: they cross nodes).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Auth {
    /// Auth off: every caller is the all-permitted `default`.
    pub fn off() -> Self {
        Self::build(false, Vec::new(), None, None)
    }

    /// The registry `--requirepass` and `--users-file` describe; auth is off with neither. A bad
    /// users file is an error of one line, `FILE:LINE: reason`.
    pub fn from_config(
        requirepass: Option<&str>,
        users_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        if requirepass.is_none() && users_file.is_none() {
            return Ok(Self::off());
        }
        let users = match users_file {
            Some(path) => file::load(path)?,
            None => Vec::new(),
        };
        Ok(Self::build(true, users, users_file.map(PathBuf::from), requirepass.map(str::to_string)))
    }

    fn build(enabled: bool, users: Vec<User>, file: Option<PathBuf>, requirepass: Option<String>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let auth = Self {
            enabled,
            users: RwLock::default(),
            epochs: AtomicU64::new(seed),
            file,
            requirepass,
            failures: Default::default(),
            warned: Mutex::new((None, 0)),
            basic: RwLock::default(),
            tokens: OnceLock::new(),
            bearer: RwLock::default(),
        };
        auth.install(users);
        auth
    }

    /// Makes `users` (plus `default` as `--requirepass` says) the registry: existing users are
    /// updated in place (live connections see the new rules), missing ones deleted.
    fn install(&self, mut users: Vec<User>) {
        let default = match users.iter().position(|u| u.name == "default") {
            Some(i) => users.remove(i),
            // Without auth `default` may do everything; with a users file that does not
            // mention it, unlike Redis, it is off: a users file alone never opens the server.
            None if !self.enabled || self.requirepass.is_some() => User::everything("default"),
            None => User::new("default"),
        };
        let mut default = default;
        if let Some(pass) = &self.requirepass {
            default.passwords = vec![rules::digest_of(pass.as_bytes())];
            default.nopass = false;
            default.enabled = true;
        }
        users.push(default);
        let mut map = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = BTreeMap::new();
        for user in users {
            let epoch = self.next_epoch();
            let name = user.name.clone();
            let principal = match map.remove(&name) {
                Some(p) => {
                    p.replace(user, epoch);
                    p
                }
                None => Principal(Arc::new(Account {
                    name: name.clone(),
                    fingerprint: AtomicU64::new(fingerprint(&user)),
                    user: RwLock::new(Arc::new(user)),
                    epoch: AtomicU64::new(epoch),
                })),
            };
            next.insert(name, principal);
        }
        for (name, gone) in std::mem::take(&mut *map) {
            gone.replace(User::new(&name), self.next_epoch());
        }
        *map = next;
        drop(map);
        self.basic.write().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether authentication is required (`--requirepass` or `--users-file` given).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller a new connection starts as: everything with auth off; `default` when it is on
    /// without a password (as Redis); otherwise not authenticated.
    pub fn new_caller(&self, protocol: Protocol) -> Caller {
        if !self.enabled {
            return Caller::everything(protocol);
        }
        match self.principal("default") {
            Some(p) if p.with_user(|u| u.enabled && u.nopass) => Caller::user(protocol, p),
            _ => Caller::anonymous(protocol),
        }
    }

    /// The user `name`, if it exists.
    pub fn principal(&self, name: &str) -> Option<Principal> {
        self.users.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// Checks `password` for `user`: the principal, or `WrongPass` for an unknown user, a wrong
    /// password or a disabled user alike (an unknown user costs the same digest).
    pub fn authenticate(&self, user: &str, password: &[u8]) -> Result<Principal, AuthError> {
        match self.principal(user) {
            Some(p) if p.with_user(|u| u.accepts(password)) => Ok(p),
            Some(_) => Err(AuthError::WrongPass),
            None => {
                let _ = rules::digest_of(password);
                Err(AuthError::WrongPass)
            }
        }
    }

    /// Authenticates the value of an `Authorization: Basic ...` header (base64 of
    /// `user:password`), remembering values that succeeded until their user changes.
    pub fn basic(&self, credentials: &[u8]) -> Result<Principal, AuthError> {
        if let Some((p, epoch)) = self.basic.read().unwrap_or_else(PoisonError::into_inner).get(credentials)
            && p.epoch() == *epoch
        {
            return Ok(p.clone());
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| AuthError::WrongPass)?;
        let colon = decoded.iter().position(|&c| c == b':').ok_or(AuthError::WrongPass)?;
        let user = std::str::from_utf8(&decoded[..colon]).map_err(|_| AuthError::WrongPass)?;
        let principal = self.authenticate(user, &decoded[colon + 1..])?;
        let epoch = principal.epoch();
        let mut cache = self.basic.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= BASIC_CACHE {
            cache.clear();
        }
        cache.insert(credentials.into(), (principal.clone(), epoch));
        Ok(principal)
    }

    /// Gives the registry its token signer (once; later calls are ignored and say so).
    pub fn attach_tokens(&self, tokens: Tokens) -> bool {
        self.tokens.set(tokens).is_ok()
    }

    /// A token for `principal`, valid for `--token-ttl`: the text and its expiry in Unix ms.
    /// Refused while the registry has no signer (auth off: nothing needs a token).
    pub fn issue_token(&self, principal: &Principal) -> Result<(String, u64), nanodb_protocol::Error> {
        let tokens = self.tokens.get().ok_or_else(tokens_off)?;
        let now = unix_ms();
        let token = tokens.key.issue(principal.name(), principal.fingerprint(), now, tokens.ttl);
        let expires = now.saturating_add(u64::try_from(tokens.ttl.as_millis()).unwrap_or(u64::MAX));
        Ok((token, expires))
    }

    /// Authenticates an `Authorization: Bearer ...` token: signed by this server's secret, not
    /// expired, and issued to the user as it is now (any change to the user since revokes it).
    /// Tokens that verified are remembered until they expire or their user changes.
    pub fn bearer(&self, token: &[u8]) -> Result<Principal, nanodb_protocol::Error> {
        use nanodb_protocol::Error;
        let now = unix_ms();
        if let Some((p, print, expires)) =
            self.bearer.read().unwrap_or_else(PoisonError::into_inner).get(token)
            && p.fingerprint() == *print
            && now < *expires
        {
            return Ok(p.clone());
        }
        let tokens = self.tokens.get().ok_or(Error::BadToken("tokens are not enabled on this server"))?;
        let text = std::str::from_utf8(token).map_err(|_| Error::BadToken("malformed token"))?;
        let claims = tokens.key.verify(text, now).map_err(|e| match e {
            TokenError::Malformed => Error::BadToken("malformed token"),
            TokenError::BadSignature => Error::BadToken("invalid token signature"),
            TokenError::Expired => Error::BadToken("token expired"),
        })?;
        let revoked = Error::BadToken("token revoked: its user changed or was removed since it was issued");
        let principal = self.principal(&claims.user).ok_or(revoked.clone())?;
        if principal.fingerprint() != claims.epoch || !principal.with_user(|u| u.enabled) {
            return Err(revoked);
        }
        let mut cache = self.bearer.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= BASIC_CACHE {
            cache.clear();
        }
        cache.insert(token.into(), (principal.clone(), claims.epoch, claims.expires_at_ms));
        Ok(principal)
    }

    /// The user name an `Authorization: Basic` value claims (for logging a failure), if it
    /// decodes; never the password.
    pub fn basic_user(credentials: &[u8]) -> String {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).unwrap_or_default();
        let name = decoded.split(|&c| c == b':').next().unwrap_or_default();
        String::from_utf8_lossy(name).chars().take(64).collect()
    }

    /// Counts a failed authentication on `protocol` and logs it (never the password), at most
    /// one warning a second; the rest are counted in the next warning.
    pub fn record_failure(&self, protocol: Protocol, user: &str, peer: Option<SocketAddr>) {
        self.failures[protocol as usize].fetch_add(1, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, suppressed) = &mut *warned;
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(
                protocol = protocol.as_str(),
                user,
                peer,
                suppressed = *suppressed,
                "authentication failed"
            );
            *last = Some(Instant::now());
            *suppressed = 0;
        } else {
            *suppressed += 1;
        }
    }

    /// Failed authentications on `protocol` since start.
    pub fn failures(&self, protocol: Protocol) -> u64 {
        self.failures[protocol as usize].load(Ordering::Relaxed)
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().unwrap_or_else(PoisonError::into_inner).values().map(Principal::user).collect()
    }

    /// `ACL SETUSER name rules...`: applies every rule to the user (created off and empty if new),
    /// all or nothing, and gives it a new epoch.
    pub fn set_user(&self, name: &str, rules: &[&str]) -> Result<(), RuleError> {
        // Under the registry's write lock, so two SETUSERs of one user cannot lose either.
        let mut map = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let mut user = match map.get(name) {
            Some(p) => p.with_user(User::clone),
            None => User::new(name),
        };
        for rule in rules {
            user.apply(rule)?;
        }
        let epoch = self.next_epoch();
        match map.get(name) {
            Some(p) => p.replace(user, epoch),
            None => {
                let account = Account {
                    name: name.to_string(),
                    fingerprint: fingerprint(&user).into(),
                    user: RwLock::new(Arc::new(user)),
                    epoch: epoch.into(),
                };
                map.insert(name.to_string(), Principal(Arc::new(account)));
            }
        }
        Ok(())
    }

    /// `ACL DELUSER name`: whether it existed. Its live connections keep no permission.
    pub fn del_user(&self, name: &str) -> bool {
        let removed = self.users.write().unwrap_or_else(PoisonError::into_inner).remove(name);
        match removed {
            Some(p) => {
                p.replace(User::new(name), self.next_epoch());
                true
            }
            None => false,
        }
    }

    /// The users file, if any.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// `ACL SAVE`: rewrites the users file atomically with every user.
    pub fn save(&self) -> Result<(), String> {
        let path = self.file.as_deref().ok_or("no users file is configured (--users-file)")?;
        let users = self.users();
        file::save(path, &file::render(users.iter().map(|u| &**u)))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `ACL LOAD`: re-reads the users file; on error nothing changes.
    pub fn load(&self) -> Result<(), String> {
        let path = self.file.as_deref().ok_or("no users file is configured (--users-file)")?;
        let users = file::load(path)?;
        self.install(users);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanodb_protocol::Error;

    fn auth(text: &str, requirepass: Option<&str>) -> Auth {
        Auth::build(true, file::parse(text).expect("parses"), None, requirepass.map(str::to_string))
    }

    #[test]
    fn authenticate_and_epochs() {
        let a = auth("user alice on >pw ~a:* +@read\nuser bob off >pw\n", None);
        let alice = a.authenticate("alice", b"pw").expect("alice");
        assert_eq!(alice.name(), "alice");
        assert_eq!(a.authenticate("alice", b"nope").map(|p| p.epoch()), Err(AuthError::WrongPass));
        assert!(a.authenticate("bob", b"pw").is_err(), "disabled");
        assert!(a.authenticate("nobody", b"pw").is_err(), "unknown");
        assert!(a.authenticate("default", b"").is_err(), "a users file without default leaves it off");
        assert!(!a.new_caller(Protocol::Resp).is_authenticated());
        let before = alice.epoch();
        a.set_user("alice", &["+@write"]).expect("setuser");
        assert!(alice.epoch() > before, "any change bumps the epoch");
        let caller = Caller::user(Protocol::Resp, alice.clone());
        let set = nanodb_protocol::cmd::Delete { key: "a:1".into() };
        let need =
            || Need::Command(nanodb_protocol::CommandName::Delete, nanodb_protocol::TypedCommand::keys(&set));
        assert_eq!(caller.authorize(need()), Ok(()), "a live principal sees the new rules");
        assert!(a.set_user("alice", &["-@write", "bogus"]).is_err());
        assert_eq!(caller.authorize(need()), Ok(()), "a failed SETUSER changes nothing");
        let e = alice.epoch();
        assert!(a.del_user("alice") && alice.epoch() > e);
        assert!(matches!(caller.authorize(need()), Err(Error::NoPerm(_))));
        assert!(a.principal("alice").is_none());
    }

    #[test]
    fn requirepass_is_defaults_password_and_basic_is_cached() {
        let a = auth("", Some("s3cret"));
        assert!(a.authenticate("default", b"s3cret").is_ok());
        assert!(a.authenticate("default", b"").is_err());
        let good = base64::engine::general_purpose::STANDARD.encode("default:s3cret");
        assert!(a.basic(good.as_bytes()).is_ok());
        assert!(a.basic(good.as_bytes()).is_ok(), "from the cache");
        assert!(a.basic(b"!!!").is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("default");
        assert!(a.basic(no_colon.as_bytes()).is_err());
        assert_eq!(Auth::basic_user(good.as_bytes()), "default", "the user, never the password");
        assert_eq!(Auth::basic_user(b"!!!"), "");
        a.set_user("default", &["resetpass", ">new"]).expect("setuser");
        assert!(a.basic(good.as_bytes()).is_err(), "a cached header dies with the password");
        let off = Auth::off();
        assert!(!off.enabled() && off.new_caller(Protocol::Http).is_authenticated());
        let open = auth("user default on nopass allkeys +@all\n", None);
        assert_eq!(open.new_caller(Protocol::Resp).user_name(), Some("default"));
    }

    #[test]
    fn failures_are_counted_per_protocol() {
        let a = auth("", Some("x"));
        a.record_failure(Protocol::Tcp, "u", None);
        a.record_failure(Protocol::Tcp, "u", None);
        assert_eq!((a.failures(Protocol::Tcp), a.failures(Protocol::Resp)), (2, 0));
    }
}
