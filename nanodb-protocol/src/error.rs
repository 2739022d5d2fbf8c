//! The one error type of NanoDB, with stable codes.
//!
//! Every protocol maps [`Error`] exactly once (gRPC status, HTTP status + JSON body, TCP error frame,
//! RESP `-ERR`). The numeric [`ErrorCode`] values and names are part of the wire contract: never
//! renumber them, only add.

use std::fmt;

/// Everything that can go wrong with a request, as seen by a client.
///
/// Messages say what was wrong and, for limits, the limit that applied and its setting's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A key, hash field or other name was empty.
    #[error("{what} must not be empty")]
    Empty {
        /// What was empty ("key", "field").
        what: &'static str,
    },
    /// A key or field longer than `max_key_len`.
    #[error("{what} is {len} bytes; the limit is {max} bytes (max_key_len)")]
    KeyTooLarge {
        /// What was too long ("key", "field").
        what: &'static str,
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A value longer than `max_value_len`.
    #[error("value is {len} bytes; the limit is {max} bytes (max_value_len)")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A count above a configured limit (batch length, scan page, list values).
    #[error("{what} is {len}; the limit is {max} ({setting})")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The count asked for.
        len: usize,
        /// The configured limit.
        max: usize,
        /// The setting that holds the limit.
        setting: &'static str,
    },
    /// The key holds a value of another type than the operation works on.
    #[error("operation against a key holding the wrong kind of value")]
    WrongType,
    /// The value is not a decimal 64-bit integer.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// The arithmetic result does not fit a signed 64-bit integer.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// An argument is outside its domain (a bad cursor, an unknown enum value, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The key does not exist, where the operation needs it to.
    #[error("no such key")]
    NotFound,
    /// A write condition (if-absent, if-present, if-version) did not hold.
    #[error("condition failed: {0}")]
    ConditionFailed(String),
    /// A frame or message could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A frame longer than `max_frame_len`.
    #[error("frame is {len} bytes; the limit is {max} bytes (max_frame_len)")]
    FrameTooLarge {
        /// Its claimed length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The client asked for a protocol version this server does not speak.
    #[error("protocol version {got} is not supported; this server speaks version {supported}")]
    UnsupportedVersion {
        /// The version the client asked for.
        got: u16,
        /// The version this server speaks.
        supported: u16,
    },
    /// A request arrived before the HELLO handshake.
    #[error("the first frame must be HELLO")]
    HandshakeRequired,
    /// The server is at its connection limit.
    #[error("too many connections; the limit is {max} (max_connections)")]
    TooManyConnections {
        /// The configured limit.
        max: usize,
    },
    /// The server is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server cannot take writes now (for example after a failed fsync); reads still work.
    #[error("writes are unavailable: {0}")]
    Unavailable(String),
    /// The request did not finish within its deadline.
    #[error("request timed out")]
    Timeout,
    /// The server is overloaded and shed the request.
    #[error("server busy; retry later")]
    Busy,
    /// A fault inside the server; details are in the server's log, not here.
    #[error("internal error")]
    Internal,
    /// Authentication is required before this request (auth is on and the caller has not
    /// authenticated).
    #[error("Authentication required.")]
    NoAuth,
    /// Unknown user, wrong password or disabled user (deliberately not told apart).
    #[error("invalid username-password pair or user is disabled.")]
    WrongPass,
    /// A bearer token that cannot be used: malformed, forged, expired, or issued before its user
    /// changed. Its code is `WRONGPASS`: a bad token is a bad credential.
    #[error("{0}")]
    BadToken(&'static str),
    /// The authenticated user may not do this.
    #[error("{0}")]
    NoPerm(Denied),
    /// A script failed, was stopped or is not cached; the message is in Redis's words, prefix
    /// included (`ERR user_script:1: ...`, `NOSCRIPT No matching script. Please use EVAL.`).
    #[error("{0}")]
    Script(String),
    /// The dataset is over `--max-memory` and nothing could be evicted (the policy is
    /// `noeviction`, or no key qualifies): a command that may grow memory is refused; reads,
    /// deletes and shrinking commands still run. Redis's words, without its `OOM` prefix (RESP
    /// adds it).
    #[error("command not allowed when used memory > 'maxmemory'.")]
    OutOfMemory,
    /// An error as a client received it from a server: its code and message, verbatim.
    #[error("{message}")]
    Remote {
        /// The server's code (unknown numbers from a newer server read as `Internal`).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
}

/// What a user was refused, in Redis's words (`-NOPERM ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command's category is not granted to the user.
    Command {
        /// The user.
        user: String,
        /// The command, as the client's protocol names it.
        command: String,
    },
    /// A key the command touches (or a watch could deliver) is not granted.
    Key,
    /// The channel is not granted.
    Channel,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command { user, command } => {
                write!(f, "User {user} has no permissions to run the '{command}' command")
            }
            Self::Key => f.write_str("No permissions to access a key"),
            Self::Channel => f.write_str("No permissions to access a channel"),
        }
    }
}

/// The stable code of an [`Error`]: a number on the binary protocol, a name everywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// An argument is invalid: empty key, bad cursor, unknown enum value.
    InvalidArgument = 1,
    /// A key or field exceeds `max_key_len`.
    KeyTooLarge = 2,
    /// A value exceeds `max_value_len`.
    ValueTooLarge = 3,
    /// A count exceeds a configured limit.
    LimitExceeded = 4,
    /// The key holds another type.
    WrongType = 5,
    /// The value is not an integer.
    NotAnInteger = 6,
    /// Integer overflow.
    Overflow = 7,
    /// The key does not exist.
    NotFound = 8,
    /// A write condition did not hold.
    ConditionFailed = 9,
    /// The request could not be decoded.
    Malformed = 10,
    /// A frame exceeds `max_frame_len`.
    FrameTooLarge = 11,
    /// Unsupported protocol version.
    UnsupportedVersion = 12,
    /// The handshake is missing.
    HandshakeRequired = 13,
    /// The connection limit is reached.
    TooManyConnections = 14,
    /// The server is shutting down.
    ShuttingDown = 15,
    /// Writes are unavailable.
    Unavailable = 16,
    /// Deadline exceeded.
    Timeout = 17,
    /// Overloaded; retry.
    Busy = 18,
    /// Internal fault.
    Internal = 19,
    /// Authentication is required first.
    NoAuth = 20,
    /// Wrong credentials.
    WrongPass = 21,
    /// Not permitted for this user.
    NoPerm = 22,
    /// Over `--max-memory`; the command may grow memory and nothing could be evicted.
    OutOfMemory = 23,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 23] = [
        Self::InvalidArgument,
        Self::KeyTooLarge,
        Self::ValueTooLarge,
        Self::LimitExceeded,
        Self::WrongType,
        Self::NotAnInteger,
        Self::Overflow,
        Self::NotFound,
        Self::ConditionFailed,
        Self::Malformed,
        Self::FrameTooLarge,
        Self::UnsupportedVersion,
        Self::HandshakeRequired,
        Self::TooManyConnections,
        Self::ShuttingDown,
        Self::Unavailable,
        Self::Timeout,
        Self::Busy,
        Self::Internal,
        Self::NoAuth,
        Self::WrongPass,
        Self::NoPerm,
        Self::OutOfMemory,
    ];

    /// The stable name, as used in JSON bodies and gRPC/TCP messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::KeyTooLarge => "KEY_TOO_LARGE",
            Self::ValueTooLarge => "VALUE_TOO_LARGE",
            Self::LimitExceeded => "LIMIT_EXCEEDED",
            Self::WrongType => "WRONGTYPE",
            Self::NotAnInteger => "NOT_AN_INTEGER",
            Self::Overflow => "OVERFLOW",
            Self::NotFound => "NOT_FOUND",
            Self::ConditionFailed => "CONDITION_FAILED",
            Self::Malformed => "MALFORMED",
            Self::FrameTooLarge => "FRAME_TOO_LARGE",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::HandshakeRequired => "HANDSHAKE_REQUIRED",
            Self::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Unavailable => "UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
            Self::Busy => "BUSY",
            Self::Internal => "INTERNAL",
            Self::NoAuth => "NOAUTH",
            Self::WrongPass => "WRONGPASS",
            Self::NoPerm => "NOPERM",
            Self::OutOfMemory => "OUT_OF_MEMORY",
        }
    }

    /// The numeric code carried by TCP error frames.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code for a number read off the wire; `None` for a number this version does not know.
    pub fn from_u16(n: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_u16() == n)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// This error's stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Empty { .. } | Self::InvalidArgument(_) | Self::Script(_) => ErrorCode::InvalidArgument,
            Self::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            Self::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            Self::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Self::WrongType => ErrorCode::WrongType,
            Self::NotAnInteger => ErrorCode::NotAnInteger,
            Self::Overflow => ErrorCode::Overflow,
            Self::NotFound => ErrorCode::NotFound,
            Self::ConditionFailed(_) => ErrorCode::ConditionFailed,
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::HandshakeRequired => ErrorCode::HandshakeRequired,
            Self::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Timeout => ErrorCode::Timeout,
            Self::Busy => ErrorCode::Busy,
            Self::Internal => ErrorCode::Internal,
            Self::NoAuth => ErrorCode::NoAuth,
            Self::WrongPass | Self::BadToken(_) => ErrorCode::WrongPass,
            Self::NoPerm(_) => ErrorCode::NoPerm,
            Self::OutOfMemory => ErrorCode::OutOfMemory,
            Self::Remote { code, .. } => *code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut names = std::collections::HashSet::new();
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.as_u16() as usize, i + 1, "codes are dense and ordered");
            assert_eq!(ErrorCode::from_u16(code.as_u16()), Some(*code));
            assert!(names.insert(code.as_str()), "duplicate name {code}");
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::from_u16(999), None);
    }

    #[test]
    fn limit_messages_name_the_limit_and_setting() {
        let e = Error::ValueTooLarge { len: 10, max: 4 };
        assert_eq!(e.code(), ErrorCode::ValueTooLarge);
        let msg = e.to_string();
        assert!(msg.contains("10") && msg.contains('4') && msg.contains("max_value_len"), "{msg}");
    }
}
