//! The parts of a Lua script command ([`crate::cmd::Eval`]): where the script's text comes from,
//! and the value it returns, typed as Redis converts a Lua value into a reply.
//!
//! A script declares every key it may touch (`KEYS`); the server runs it as one atomic group over
//! exactly those keys (see the server's `scripting` module), so they are also what permissions
//! check. `ARGV` are plain arguments.

use bytes::Bytes;

use crate::command::Limits;
use crate::error::Error;

/// The script to run: its text (EVAL), or the SHA-1 of a text the server has cached (EVALSHA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// The Lua source.
    Text(Bytes),
    /// The lowercase hex SHA-1 (40 characters) of a cached source.
    Sha(Bytes),
}

/// What a script returned, as Redis converts a Lua value: a number becomes an integer
/// (truncated), a string a bulk string, `false`/`nil` a null, `true` the integer 1, a table with
/// `ok` a status, with `err` an error, any other table an array (up to its first nil).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptValue {
    /// Null (Lua `nil` or `false`).
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// A status reply (`{ok = "..."}`).
    Status(String),
    /// An error reply (`{err = "..."}`) inside an array (at top level it is the script's error).
    Error(String),
    /// An array.
    Array(Vec<ScriptValue>),
}

/// Deepest array nesting a script reply may have on the wire (a decoder refuses deeper).
pub const MAX_SCRIPT_REPLY_DEPTH: usize = 64;

impl crate::cmd::Eval {
    /// Checks the keys, arguments and source against `limits`.
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), Error> {
        match &self.script {
            ScriptSource::Text(text) => limits.value(text)?,
            ScriptSource::Sha(sha) => {
                if sha.len() != 40 || !sha.iter().all(u8::is_ascii_hexdigit) {
                    return Err(Error::Script("NOSCRIPT No matching script. Please use EVAL.".into()));
                }
            }
        }
        limits.count("keys of one script", self.keys.len())?;
        limits.count("arguments of one script", self.args.len())?;
        self.keys.iter().try_for_each(|k| limits.key(k))?;
        self.args.iter().try_for_each(|a| limits.value(a))
    }
}
