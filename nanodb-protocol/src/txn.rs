//! The parts of an etcd-style transaction ([`crate::cmd::Txn`]): compares on keys, then one of two
//! lists of operations, all applied as one atomic group (see the server's `engine::group`).
//!
//! A compare reads a key's version, value or existence as the group sees it before any operation
//! runs. Every compare holding selects `success`, otherwise `failure`; the result says which ran
//! and carries each of its operations' result, in order. An operation that fails at run time
//! (WRONGTYPE, not an integer) fails alone, as inside Redis's EXEC; the others still apply.

use bytes::Bytes;

use crate::command::{Class, Command, Keys, Limits, Reply};
use crate::error::Error;

/// How a compare relates the key's current state to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Current < target (versions numerically, values bytewise).
    Less,
    /// Current > target.
    Greater,
}

impl CompareOp {
    /// Whether `current op target` holds.
    pub fn holds<T: Ord + ?Sized>(self, current: &T, target: &T) -> bool {
        match self {
            Self::Equal => current == target,
            Self::NotEqual => current != target,
            Self::Less => current < target,
            Self::Greater => current > target,
        }
    }
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version (0 when it does not exist, as etcd's).
    Version(u64),
    /// The key's string value; a missing key or one of another type never compares (the compare
    /// is false whatever the operator).
    Value(Bytes),
    /// Whether the key exists (the operator must be `Equal` or `NotEqual`).
    Exists(bool),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Bytes,
    /// The relation.
    pub op: CompareOp,
    /// What the key's state is compared with.
    pub target: CompareTarget,
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// True when every compare held and `success` ran; false when `failure` ran.
    pub succeeded: bool,
    /// One result per operation of the branch that ran, in order.
    pub results: Vec<Result<Reply, Error>>,
}

/// Whether `cmd` may run inside an atomic group: it touches only keys it names (so the group can
/// lock and load exactly those), and is a keyspace command. Scans, counts, FLUSH and RANDOMKEY
/// read the whole keyspace; publishes, batches and transactions are not keyspace commands.
pub fn check_group_op(cmd: &Command) -> Result<(), Error> {
    let named = match cmd.keys() {
        Keys::None | Keys::One(_) | Keys::Two(..) | Keys::Pairs(_) => true,
        // A script is a group itself.
        Keys::Many(_) | Keys::Prefix(_) | Keys::All | Keys::Channel(_) | Keys::Batch(_) | Keys::Txn(_) => {
            false
        }
    };
    if !named || cmd.command_name().class() == Class::PubSub || cmd.command_name().class() == Class::Batch {
        return Err(Error::InvalidArgument(format!(
            "{} cannot run in a transaction: only commands on named keys can",
            cmd.name()
        )));
    }
    Ok(())
}

impl crate::cmd::Txn {
    /// Checks the compares and every operation of both branches against `limits`.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), Error> {
        limits.count("compares in one transaction", self.compares.len())?;
        limits.count("operations in one transaction branch", self.success.len())?;
        limits.count("operations in one transaction branch", self.failure.len())?;
        for c in &self.compares {
            limits.key(&c.key)?;
            match &c.target {
                CompareTarget::Value(v) => limits.value(v)?,
                CompareTarget::Exists(_) if !matches!(c.op, CompareOp::Equal | CompareOp::NotEqual) => {
                    return Err(Error::InvalidArgument(
                        "an existence compare takes equal or not-equal".into(),
                    ));
                }
                _ => {}
            }
        }
        for op in self.success.iter().chain(&self.failure) {
            check_group_op(op)?;
            op.validate(limits)?;
        }
        Ok(())
    }

    /// Whether any operation of either branch writes: a transaction of reads only (an atomic
    /// multi-key read) is a read, served while the log refuses writes and, in a cluster, without
    /// a log entry.
    pub fn writes(&self) -> bool {
        self.success.iter().chain(&self.failure).any(Command::is_write)
    }

    /// Every key the transaction may touch: its compares' and both branches' (what a group
    /// locks, and what permissions and cluster routing look at).
    pub fn declared_keys(&self) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = self.compares.iter().map(|c| c.key.clone()).collect();
        for op in self.success.iter().chain(&self.failure) {
            op_keys(op, &mut keys);
        }
        keys
    }
}

/// Appends the keys `cmd` names to `out`.
pub fn op_keys(cmd: &Command, out: &mut Vec<Bytes>) {
    match cmd.keys() {
        Keys::One(k) => out.push(k.clone()),
        Keys::Two(a, b) => out.extend([a.clone(), b.clone()]),
        Keys::Pairs(p) => out.extend(p.iter().map(|(k, _)| k.clone())),
        Keys::Many(keys) => out.extend(keys.iter().cloned()),
        Keys::None | Keys::Prefix(_) | Keys::All | Keys::Channel(_) | Keys::Batch(_) | Keys::Txn(_) => {}
    }
}
