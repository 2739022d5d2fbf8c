//! The one authorization check: what a request needs ([`Need`]: a typed command with its keys,
//! a watch, a subscription, an admin operation) against what its [`Caller`] may do. Every
//! protocol reaches it through `Context` (`run_pipelined` for commands, `Context::authorize` for
//! the rest), never on its own. With auth off the caller is [`Access::Everything`] and the check
//! is one branch.

use nanodb_protocol::{Class, CommandName, Denied, Error, Keys, Subscription};

use super::Principal;
use super::rules::{Category, User};
use crate::feed::Topic;
use crate::stats::Protocol;

/// Who sends a request, on which protocol: what `Context::run` takes beside the command.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The protocol, for stats.
    pub protocol: Protocol,
    access: Access,
}

/// What a caller may do.
#[derive(Debug, Clone)]
enum Access {
    /// Auth is off: everything (the implicit `default` user).
    Everything,
    /// Auth is on and the caller has not authenticated: nothing but authenticating.
    Anonymous,
    /// An authenticated user, whose current rules apply to each request: the rules as they were
    /// at `epoch`, used while the user's epoch is still that (an atomic load of a value written
    /// only on changes), so a check takes no lock and writes no shared memory; after a change
    /// each check reads the current rules under the user's lock.
    User(Principal, std::sync::Arc<User>, u64),
}

impl Caller {
    /// A caller allowed everything: only for servers with auth off (and tests).
    pub fn everything(protocol: Protocol) -> Self {
        Self { protocol, access: Access::Everything }
    }

    /// A caller that has not authenticated.
    pub fn anonymous(protocol: Protocol) -> Self {
        Self { protocol, access: Access::Anonymous }
    }

    /// A caller authenticated as `principal`.
    pub fn user(protocol: Protocol, principal: Principal) -> Self {
        let (user, epoch) = principal.snapshot();
        Self { protocol, access: Access::User(principal, user, epoch) }
    }

    /// The user this caller authenticated as, if any.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.access {
            Access::User(p, ..) => Some(p),
            _ => None,
        }
    }

    /// Whether the caller may send more than authentication (auth off, or authenticated).
    pub fn is_authenticated(&self) -> bool {
        !matches!(self.access, Access::Anonymous)
    }

    /// The user's name (`default` with auth off); `None` before authentication.
    pub fn user_name(&self) -> Option<&str> {
        match &self.access {
            Access::Everything => Some("default"),
            Access::Anonymous => None,
            Access::User(p, ..) => Some(p.name()),
        }
    }

    /// Whether this caller may do what `need` says: `NOAUTH` before authentication, `NOPERM`
    /// when the user's rules refuse it.
    #[inline]
    pub fn authorize(&self, need: Need<'_>) -> Result<(), Error> {
        self.authorize_with(|| need)
    }

    /// [`Caller::authorize`] with the need worked out only when there is a user to check it
    /// against: with auth off the command's keys are never even listed.
    #[inline]
    pub fn authorize_with<'a>(&self, need: impl FnOnce() -> Need<'a>) -> Result<(), Error> {
        match &self.access {
            Access::Everything => Ok(()),
            Access::Anonymous => Err(Error::NoAuth),
            Access::User(p, user, epoch) if p.epoch() == *epoch => check(user, need()),
            Access::User(p, ..) => p.with_user(|u| check(u, need())),
        }
    }
}

/// What a request needs permission for.
#[derive(Debug, Clone, Copy)]
pub enum Need<'a> {
    /// A command and the keys it touches.
    Command(CommandName, Keys<'a>),
    /// A watch on one key, or on every key starting with a prefix (it may deliver any of them).
    Watch {
        /// The key or prefix.
        key: &'a [u8],
        /// Whether `key` is a prefix.
        prefix: bool,
    },
    /// A subscription to one channel.
    Subscribe(&'a [u8]),
    /// A subscription to a channel pattern.
    PSubscribe(&'a [u8]),
    /// An admin operation (CONFIG, ACL, snapshots, ...), named for the refusal.
    Admin(&'static str),
    /// Nothing but being authenticated (stopping a watch or subscription).
    Authenticated,
}

impl<'a> Need<'a> {
    /// What watching or subscribing to a change-feed topic needs.
    pub fn of_topic(topic: &'a Topic) -> Self {
        match topic {
            Topic::Key(k) => Need::Watch { key: k, prefix: false },
            Topic::Prefix(p) => Need::Watch { key: p, prefix: true },
            Topic::Channel(c) => Need::Subscribe(c),
            Topic::Pattern(p) => Need::PSubscribe(p),
        }
    }

    /// What a binary-protocol subscription request needs: a watch, read permission on what it
    /// could deliver; a subscription, its channel or pattern; stopping one, only authentication.
    pub fn of_subscription(op: &'a Subscription) -> Self {
        match op {
            Subscription::Watch { key, prefix, .. } => Need::Watch { key, prefix: *prefix },
            Subscription::Subscribe { channel } => Need::Subscribe(channel),
            Subscription::PSubscribe { pattern } => Need::PSubscribe(pattern),
            Subscription::Unwatch { .. }
            | Subscription::Unsubscribe { .. }
            | Subscription::PUnsubscribe { .. } => Need::Authenticated,
        }
    }
}

/// Write commands that also answer what the key held (Redis's `ACCESS` key flag): they need read
/// permission on their (first) key too.
fn reveals(name: CommandName) -> bool {
    use CommandName as N;
    matches!(
        name,
        N::GetSet | N::GetDel | N::GetEx | N::Incr | N::IncrFloat | N::HashIncr | N::ListPop | N::Rename
    )
}

/// The category a command needs.
fn category(name: CommandName) -> Option<Category> {
    match name {
        CommandName::Flush => Some(Category::Admin),
        // A transaction needs what its compares and operations need (see `command`).
        CommandName::Txn => None,
        _ => match name.class() {
            Class::Connection | Class::Batch => None,
            Class::Read => Some(Category::Read),
            Class::Write => Some(Category::Write),
            Class::PubSub => Some(Category::PubSub),
        },
    }
}

fn check(u: &User, need: Need<'_>) -> Result<(), Error> {
    match need {
        Need::Command(name, keys) => command(u, name, keys),
        Need::Watch { key, prefix } => {
            let allowed = if prefix { u.prefix_allowed(key, false) } else { u.key_allowed(key, false) };
            if !u.allows(Category::Read) {
                Err(refused(u, "watch"))
            } else if allowed {
                Ok(())
            } else {
                Err(Error::NoPerm(Denied::Key))
            }
        }
        Need::Subscribe(_) if !u.allows(Category::PubSub) => Err(refused(u, "subscribe")),
        Need::Subscribe(channel) if u.channel_allowed(channel) => Ok(()),
        Need::PSubscribe(_) if !u.allows(Category::PubSub) => Err(refused(u, "psubscribe")),
        Need::PSubscribe(pattern) if u.pattern_allowed(pattern) => Ok(()),
        Need::Subscribe(_) | Need::PSubscribe(_) => Err(Error::NoPerm(Denied::Channel)),
        Need::Admin(what) if !u.allows(Category::Admin) => Err(refused(u, what)),
        Need::Admin(_) | Need::Authenticated => Ok(()),
    }
}

fn refused(u: &User, command: &str) -> Error {
    Error::NoPerm(Denied::Command { user: u.name.clone(), command: command.to_string() })
}

fn command(u: &User, name: CommandName, keys: Keys<'_>) -> Result<(), Error> {
    if let Keys::Batch(ops) = keys {
        // A batch is refused whole when any operation is.
        return ops.iter().try_for_each(|op| command(u, op.command_name(), op.keys()));
    }
    if let Keys::Txn(txn) = keys {
        // A compare reads its key; every operation of either branch is checked as if it ran
        // alone, so a transaction is refused whole when any part of it would be.
        for c in &txn.compares {
            command(u, CommandName::Get, Keys::One(&c.key))?;
        }
        return txn
            .success
            .iter()
            .chain(&txn.failure)
            .try_for_each(|op| command(u, op.command_name(), op.keys()));
    }
    let Some(cat) = category(name) else { return Ok(()) };
    if !u.allows(cat) {
        return Err(refused(u, name.as_str()));
    }
    let write = name.class() == Class::Write;
    let key = |k: &[u8], write: bool| u.key_allowed(k, write);
    let ok = match keys {
        Keys::None | Keys::Batch(_) | Keys::Txn(_) => true,
        Keys::One(k) => key(k, write) && (!write || !reveals(name) || key(k, false)),
        Keys::Two(a, b) => key(a, write) && key(b, write) && (!write || !reveals(name) || key(a, false)),
        Keys::Pairs(pairs) => pairs.iter().all(|(k, _)| key(k, write)),
        // A script may read and write every key it declares.
        Keys::Many(keys) => keys.iter().all(|k| key(k, true) && key(k, false)),
        Keys::Prefix(p) => u.prefix_allowed(p, write),
        Keys::All => u.prefix_allowed(b"", write),
        Keys::Channel(c) => {
            if !u.channel_allowed(c) {
                return Err(Error::NoPerm(Denied::Channel));
            }
            true
        }
    };
    if ok { Ok(()) } else { Err(Error::NoPerm(Denied::Key)) }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use nanodb_protocol::{Command, TypedCommand, cmd};

    use super::*;

    fn user(rules: &str) -> User {
        let mut u = User::new("alice");
        for r in rules.split_whitespace() {
            u.apply(r).unwrap_or_else(|e| panic!("{e}"));
        }
        u
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run<C: TypedCommand + Clone>(u: &User, c: &C) -> Result<(), Error> {
        let c: Command = c.clone().into();
        check(u, Need::Command(c.command_name(), c.keys()))
    }

    #[test]
    fn classes_keys_and_channels() {
        let u = user("on ~app:* %R~shared:* &news:* +@read +@write");
        assert_eq!(run(&u, &cmd::Get { key: b("app:1") }), Ok(()));
        assert_eq!(run(&u, &cmd::Get { key: b("shared:1") }), Ok(()));
        assert_eq!(run(&u, &cmd::Get { key: b("other") }), Err(Error::NoPerm(Denied::Key)));
        assert_eq!(run(&u, &cmd::Delete { key: b("shared:1") }), Err(Error::NoPerm(Denied::Key)));
        let pairs = vec![(b("app:1"), b("v")), (b("other"), b("v"))];
        assert_eq!(
            run(&u, &cmd::MultiPut { pairs, only_if_none_exist: false }),
            Err(Error::NoPerm(Denied::Key))
        );
        assert_eq!(
            run(&u, &cmd::Rename { from: b("app:1"), to: b("other") }),
            Err(Error::NoPerm(Denied::Key))
        );
        assert_eq!(run(&u, &cmd::Rename { from: b("app:1"), to: b("app:2") }), Ok(()));
        let scan = |p: &str| cmd::Scan { prefix: b(p), limit: 0, cursor: Bytes::new() };
        assert_eq!(run(&u, &scan("app:x")), Ok(()));
        assert_eq!(run(&u, &scan("ap")), Err(Error::NoPerm(Denied::Key)));
        assert_eq!(run(&u, &cmd::KeyCount {}), Err(Error::NoPerm(Denied::Key)));
        assert!(matches!(run(&u, &cmd::Flush {}), Err(Error::NoPerm(Denied::Command { .. }))));
        let publish = |c: &str| cmd::Publish { channel: b(c), message: b("m") };
        assert!(matches!(run(&u, &publish("news:1")), Err(Error::NoPerm(Denied::Command { .. }))));
        let p = user("on &news:* +@pubsub");
        assert_eq!(run(&p, &publish("news:1")), Ok(()));
        assert_eq!(run(&p, &publish("sport")), Err(Error::NoPerm(Denied::Channel)));
        assert_eq!(check(&p, Need::Subscribe(b"news:2")), Ok(()));
        assert_eq!(check(&p, Need::PSubscribe(b"news:*")), Ok(()));
        assert_eq!(check(&p, Need::PSubscribe(b"*")), Err(Error::NoPerm(Denied::Channel)));
        assert_eq!(run(&p, &cmd::Ping {}), Ok(()), "connection commands need nothing");
        assert_eq!(check(&u, Need::Watch { key: b"app:", prefix: true }), Ok(()));
        assert_eq!(check(&u, Need::Watch { key: b"", prefix: true }), Err(Error::NoPerm(Denied::Key)));
        assert_eq!(check(&u, Need::Watch { key: b"other", prefix: false }), Err(Error::NoPerm(Denied::Key)));
        assert!(check(&u, Need::Admin("config")).is_err());
        assert_eq!(check(&user("+@admin"), Need::Admin("config")), Ok(()));
    }

    #[test]
    fn reading_writes_need_read_and_batches_are_checked_whole() {
        let w = user("on %W~k:* +@write");
        assert_eq!(run(&w, &cmd::Delete { key: b("k:1") }), Ok(()));
        assert_eq!(run(&w, &cmd::GetDel { key: b("k:1") }), Err(Error::NoPerm(Denied::Key)));
        assert_eq!(run(&w, &cmd::Incr { key: b("k:1"), delta: 1 }), Err(Error::NoPerm(Denied::Key)));
        let u = user("on ~app:* +@read +@write");
        let ok = Command::Get(cmd::Get { key: b("app:1") });
        let bad = Command::Delete(cmd::Delete { key: b("x") });
        assert_eq!(run(&u, &cmd::Batch { ops: vec![ok.clone()] }), Ok(()));
        assert_eq!(run(&u, &cmd::Batch { ops: vec![ok, bad] }), Err(Error::NoPerm(Denied::Key)));
        let msg = run(&user("on allkeys +@read"), &cmd::Delete { key: b("x") }).expect_err("no write");
        assert_eq!(msg.to_string(), "User alice has no permissions to run the 'delete' command");
    }

    #[test]
    fn callers() {
        assert_eq!(Caller::everything(Protocol::Tcp).authorize(Need::Admin("acl")), Ok(()));
        assert_eq!(Caller::anonymous(Protocol::Tcp).authorize(Need::Admin("acl")), Err(Error::NoAuth));
        assert!(!Caller::anonymous(Protocol::Tcp).is_authenticated());
    }
}
