//! One user and the subset of Redis's ACL rules that shape it (`on`, `>secret`, `~app:*`,
//! `+@read`, ...): applying a rule, rendering a user back as rules, and the permission questions
//! the check asks (may this user read this key, write under this prefix, use this channel?).
//! Patterns are compiled once, when a rule is applied, so a check never allocates.

use std::fmt::{self, Write as _};

use ring::digest;

use crate::glob::glob_match;

/// A category of commands (Redis's `@read`, `@write`, `@admin`, `@pubsub`; `@connection` is
/// always allowed), as a bit in [`User::categories`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Reads keys.
    Read = 1,
    /// Changes keys.
    Write = 2,
    /// Server administration: CONFIG, FLUSH*, ACL, snapshots, cluster membership.
    Admin = 4,
    /// Publishing and subscribing.
    PubSub = 8,
}

impl Category {
    /// Every category, in the order rules are rendered.
    pub const ALL: [Category; 4] = [Self::Read, Self::Write, Self::Admin, Self::PubSub];
    /// Every category's bit.
    pub const ALL_BITS: u8 = 15;

    /// Redis's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::PubSub => "pubsub",
        }
    }

    fn bit(self) -> u8 {
        self as u8
    }
}

/// What a key pattern grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    /// `~glob`: read and write.
    ReadWrite,
    /// `%R~glob`: read only.
    Read,
    /// `%W~glob`: write only.
    Write,
}

impl KeyAccess {
    fn reads(self) -> bool {
        matches!(self, Self::ReadWrite | Self::Read)
    }

    fn writes(self) -> bool {
        matches!(self, Self::ReadWrite | Self::Write)
    }
}

/// A glob compiled for the common shapes: everything, a literal prefix, an exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<[u8]>,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `*`.
    Any,
    /// `literal*`: the literal is `text[..len - 1]`.
    Prefix,
    /// No metacharacters.
    Exact,
    /// Anything else: [`glob_match`].
    Glob,
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &[u8]) -> Self {
        let meta = |c: &u8| matches!(c, b'*' | b'?' | b'[' | b'\\');
        let shape = match text {
            b"*" => Shape::Any,
            [head @ .., b'*'] if !head.iter().any(meta) => Shape::Prefix,
            t if !t.iter().any(meta) => Shape::Exact,
            _ => Shape::Glob,
        };
        Self { text: text.into(), shape }
    }

    /// The pattern as written.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// Whether `s` matches.
    pub fn matches(&self, s: &[u8]) -> bool {
        match self.shape {
            Shape::Any => true,
            Shape::Prefix => s.starts_with(&self.text[..self.text.len() - 1]),
            Shape::Exact => *s == *self.text,
            Shape::Glob => glob_match(&self.text, s),
        }
    }

    /// Whether every string starting with `prefix` matches (decided only for `*` and `literal*`;
    /// any other shape answers no, which refuses rather than guesses).
    pub fn covers_prefix(&self, prefix: &[u8]) -> bool {
        match self.shape {
            Shape::Any => true,
            Shape::Prefix => prefix.starts_with(&self.text[..self.text.len() - 1]),
            Shape::Exact | Shape::Glob => false,
        }
    }
}

/// A password's SHA-256 digest: what is stored and compared, never the password.
pub type Digest = [u8; 32];

/// SHA-256 of `password`.
pub fn digest_of(password: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, password).as_ref());
    out
}

/// Compares two digests in constant time (every byte is looked at, whatever differs first).
pub fn same_digest(a: &Digest, b: &Digest) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One user: whether it may log in, how, and what it may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// `on`: may authenticate (connections already authenticated keep working when turned off).
    pub enabled: bool,
    /// `nopass`: any password (or none) authenticates.
    pub nopass: bool,
    /// Digests of the accepted passwords.
    pub passwords: Vec<Digest>,
    /// Key patterns with what each grants, in the order given.
    pub keys: Vec<(KeyAccess, Pattern)>,
    /// Channel patterns (`&glob`).
    pub channels: Vec<Pattern>,
    /// `allchannels` (`&*`).
    pub all_channels: bool,
    /// Category bits ([`Category`]).
    pub categories: u8,
}

impl User {
    /// A new user as Redis makes one: off, no password, no keys, no channels, no commands.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            keys: Vec::new(),
            channels: Vec::new(),
            all_channels: false,
            categories: 0,
        }
    }

    /// A user allowed everything, without a password (auth off, or Redis's `default`).
    pub fn everything(name: &str) -> Self {
        let mut u = Self::new(name);
        for rule in ["on", "nopass", "allkeys", "allchannels", "+@all"] {
            // The rules are literals this function's tests cover.
            let _ = u.apply(rule);
        }
        u
    }

    /// Applies one rule; on error the user is unchanged (each rule changes one thing).
    pub fn apply(&mut self, rule: &str) -> Result<(), RuleError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = vec![(KeyAccess::ReadWrite, Pattern::new(b"*"))],
            "resetkeys" => self.keys.clear(),
            "allchannels" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            "allcommands" => self.categories = Category::ALL_BITS,
            "nocommands" => self.categories = 0,
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = Self::new(&name);
            }
            _ => return self.apply_parametrised(rule),
        }
        Ok(())
    }

    fn apply_parametrised(&mut self, rule: &str) -> Result<(), RuleError> {
        let bad = |why: &str| Err(RuleError { rule: rule.to_string(), why: why.to_string() });
        if let Some(pass) = rule.strip_prefix('>') {
            let d = digest_of(pass.as_bytes());
            if !self.passwords.contains(&d) {
                self.passwords.push(d);
            }
            self.nopass = false;
        } else if let Some(pass) = rule.strip_prefix('<') {
            let d = digest_of(pass.as_bytes());
            let before = self.passwords.len();
            self.passwords.retain(|p| !same_digest(p, &d));
            if self.passwords.len() == before {
                return bad("no such password for this user");
            }
        } else if let Some(hex) = rule.strip_prefix('#') {
            let Some(d) = parse_hex_digest(hex) else {
                return bad("the password hash must be exactly 64 hexadecimal characters");
            };
            if !self.passwords.contains(&d) {
                self.passwords.push(d);
            }
            self.nopass = false;
        } else if let Some(glob) = rule.strip_prefix('~') {
            self.add_keys(KeyAccess::ReadWrite, glob);
        } else if let Some(rest) = rule.strip_prefix('%') {
            let Some((perms, glob)) = rest.split_once('~') else {
                return bad("expected %R~glob, %W~glob or %RW~glob");
            };
            let access = match perms.to_ascii_uppercase().as_str() {
                "R" => KeyAccess::Read,
                "W" => KeyAccess::Write,
                "RW" | "WR" => KeyAccess::ReadWrite,
                _ => return bad("key permissions are R, W or RW"),
            };
            self.add_keys(access, glob);
        } else if let Some(glob) = rule.strip_prefix('&') {
            if glob == "*" {
                self.all_channels = true;
                self.channels.clear();
            } else if !self.all_channels {
                self.channels.push(Pattern::new(glob.as_bytes()));
            }
        } else if let Some(cat) = rule.strip_prefix("+@").or_else(|| rule.strip_prefix("-@")) {
            let bits = match cat.to_ascii_lowercase().as_str() {
                "all" => Category::ALL_BITS,
                "connection" => 0,
                other => match Category::ALL.iter().find(|c| c.name() == other) {
                    Some(c) => c.bit(),
                    None => {
                        return bad("unknown category (known: read, write, admin, pubsub, connection, all)");
                    }
                },
            };
            if rule.starts_with('+') {
                self.categories |= bits;
            } else {
                self.categories &= !bits;
            }
        } else if rule.starts_with('+') || rule.starts_with('-') {
            return bad("only categories (+@read, -@write, ...) are supported, not single commands");
        } else {
            return bad("unknown rule");
        }
        Ok(())
    }

    fn add_keys(&mut self, access: KeyAccess, glob: &str) {
        let p = (access, Pattern::new(glob.as_bytes()));
        if !self.keys.contains(&p) {
            self.keys.push(p);
        }
    }

    /// Whether `password` authenticates this user (constant time over every stored digest).
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let d = digest_of(password);
        self.passwords.iter().fold(false, |ok, p| ok | same_digest(p, &d))
    }

    /// Whether every category bit in `bits` is granted.
    pub fn allows(&self, category: Category) -> bool {
        self.categories & category.bit() != 0
    }

    /// Whether `key` may be read (`write == false`) or written.
    pub fn key_allowed(&self, key: &[u8], write: bool) -> bool {
        self.keys.iter().any(|(a, p)| (if write { a.writes() } else { a.reads() }) && p.matches(key))
    }

    /// Whether every key starting with `prefix` may be read (or written).
    pub fn prefix_allowed(&self, prefix: &[u8], write: bool) -> bool {
        self.keys.iter().any(|(a, p)| (if write { a.writes() } else { a.reads() }) && p.covers_prefix(prefix))
    }

    /// Whether `channel` may be published or subscribed to.
    pub fn channel_allowed(&self, channel: &[u8]) -> bool {
        self.all_channels || self.channels.iter().any(|p| p.matches(channel))
    }

    /// Whether a pattern subscription to `pattern` is allowed: as Redis, only a pattern granted
    /// literally (or `allchannels`).
    pub fn pattern_allowed(&self, pattern: &[u8]) -> bool {
        self.all_channels || self.channels.iter().any(|p| p.text() == pattern)
    }

    /// The user as rules that rebuild it (`ACL LIST`, `ACL SAVE`): passwords as `#digest`.
    pub fn describe(&self) -> String {
        let mut s = format!("user {} {}", self.name, if self.enabled { "on" } else { "off" });
        if self.nopass {
            s.push_str(" nopass");
        }
        for p in &self.passwords {
            s.push_str(" #");
            s.push_str(&hex(p));
        }
        s.push_str(&self.key_rules());
        s.push(' ');
        s.push_str(&self.channel_rules());
        s.push(' ');
        s.push_str(&self.category_rules());
        s
    }

    /// The key rules (` ~app:* %R~shared:*`, or ` resetkeys`), each with its leading space.
    pub fn key_rules(&self) -> String {
        let mut s = String::new();
        if self.keys.is_empty() {
            s.push_str(" resetkeys");
        }
        for (a, p) in &self.keys {
            // `allkeys` is written `~*`, as Redis does: `allkeys` would also drop the patterns
            // before it when read back.
            let prefix = match a {
                KeyAccess::ReadWrite => "~",
                KeyAccess::Read => "%R~",
                KeyAccess::Write => "%W~",
            };
            let _ = write!(s, " {prefix}{}", String::from_utf8_lossy(p.text()));
        }
        s
    }

    /// The channel rules (`allchannels`, `resetchannels`, `&news:*`).
    pub fn channel_rules(&self) -> String {
        if self.all_channels {
            return "allchannels".into();
        }
        let mut s = "resetchannels".to_string();
        for p in &self.channels {
            let _ = write!(s, " &{}", String::from_utf8_lossy(p.text()));
        }
        s
    }

    /// The category rules (`+@all`, or `-@all +@read ...`).
    pub fn category_rules(&self) -> String {
        if self.categories == Category::ALL_BITS {
            return "+@all".into();
        }
        let mut s = "-@all".to_string();
        for c in Category::ALL {
            if self.allows(c) {
                let _ = write!(s, " +@{}", c.name());
            }
        }
        s
    }
}

/// A rule that could not be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule as written.
    pub rule: String,
    /// Why it was refused.
    pub why: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}': {}", self.rule, self.why)
    }
}

fn parse_hex_digest(hex: &str) -> Option<Digest> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of a digest.
pub fn hex(d: &Digest) -> String {
    d.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(rules: &str) -> User {
        let mut u = User::new("u");
        for r in rules.split_whitespace() {
            u.apply(r).unwrap_or_else(|e| panic!("{e}"));
        }
        u
    }

    #[test]
    fn passwords_are_digests_compared_whole() {
        let u = user("on >secret >other");
        assert!(u.accepts(b"secret") && u.accepts(b"other"));
        assert!(!u.accepts(b"secre") && !u.accepts(b""));
        assert_eq!(u.passwords.len(), 2);
        let off = user("off >secret");
        assert!(!off.accepts(b"secret"), "a disabled user never authenticates");
        let mut u = user("on >secret <secret");
        assert!(!u.accepts(b"secret"));
        assert!(u.apply("<nope").is_err(), "removing an unknown password is an error");
        let hashed = user(&format!("on #{}", hex(&digest_of(b"pw"))));
        assert!(hashed.accepts(b"pw") && !hashed.accepts(b"pW"));
        assert!(user("on nopass").accepts(b"anything"));
        assert!(!user("on >a resetpass").accepts(b"a"));
        assert!(!user("on nopass >a").nopass, "a password ends nopass");
        assert!(User::new("u").apply("#abc").is_err());
        assert!(User::new("u").apply(&format!("#{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn key_patterns_grant_what_they_say() {
        let u = user("~app:* %R~shared:* %W~logs:*");
        assert!(u.key_allowed(b"app:1", false) && u.key_allowed(b"app:1", true));
        assert!(u.key_allowed(b"shared:x", false) && !u.key_allowed(b"shared:x", true));
        assert!(!u.key_allowed(b"logs:x", false) && u.key_allowed(b"logs:x", true));
        assert!(!u.key_allowed(b"other", false) && !u.key_allowed(b"other", true));
        assert!(u.prefix_allowed(b"app:", false) && u.prefix_allowed(b"app:x", false));
        assert!(!u.prefix_allowed(b"app", false) && !u.prefix_allowed(b"", false));
        assert!(!u.prefix_allowed(b"logs:", false));
        let all = user("allkeys");
        assert!(all.prefix_allowed(b"", false) && all.prefix_allowed(b"", true));
        assert!(!user("allkeys resetkeys").key_allowed(b"a", false));
        let g = user("~user:?:name");
        assert!(g.key_allowed(b"user:1:name", true) && !g.key_allowed(b"user:12:name", true));
        assert!(!g.prefix_allowed(b"user:1:name", false), "only * and literal* cover a prefix");
        assert!(User::new("u").apply("%X~a").is_err() && User::new("u").apply("%Ra").is_err());
    }

    #[test]
    fn channels_and_categories() {
        let u = user("&news:* +@read +@pubsub");
        assert!(u.channel_allowed(b"news:1") && !u.channel_allowed(b"sport"));
        assert!(u.pattern_allowed(b"news:*") && !u.pattern_allowed(b"news:1*"));
        assert!(user("allchannels").pattern_allowed(b"*"));
        assert!(!user("allchannels resetchannels").channel_allowed(b"a"));
        assert!(u.allows(Category::Read) && u.allows(Category::PubSub) && !u.allows(Category::Write));
        let all = user("+@all -@admin +@connection");
        assert!(all.allows(Category::Write) && !all.allows(Category::Admin));
        assert!(User::new("u").apply("+@nosuch").is_err());
        assert!(User::new("u").apply("+get").is_err(), "single commands are not in the subset");
        assert!(User::new("u").apply("bogus").is_err());
        assert_eq!(user("on >x allkeys +@all reset"), User::new("u"));
    }

    #[test]
    fn describe_round_trips() {
        for rules in [
            "on >secret ~app:* %R~shared:* %W~w:* &news:* +@read +@write",
            "off nopass allkeys allchannels +@all",
            "on",
        ] {
            let u = user(rules);
            let text = u.describe();
            let again = user(text.strip_prefix("user u ").unwrap_or_else(|| panic!("{text}")));
            assert_eq!(again, u, "{text}");
        }
        assert_eq!(
            user("on nopass allkeys allchannels +@all").describe(),
            "user u on nopass ~* allchannels +@all"
        );
        let mixed = user("~a ~* %R~b");
        assert_eq!(user(mixed.describe().strip_prefix("user u ").unwrap_or_default()), mixed);
    }
}
