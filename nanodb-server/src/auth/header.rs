//! The `Authorization` header (HTTP's, and gRPC's metadata of the same name): its schemes, and
//! the caller it makes, the one resolution both the REST and the gRPC layer use.

use nanodb_protocol::Error;

use super::{Auth, Caller};
use crate::stats::Protocol;

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No header.
    Missing,
    /// `Basic base64(user:password)`: the base64 part.
    Basic(&'a [u8]),
    /// `Bearer <token>`: the token.
    Bearer(&'a [u8]),
    /// A scheme this server does not take.
    Unsupported,
}

/// Splits an `Authorization` header value into its scheme and credentials (the scheme is
/// case-insensitive, RFC 9110).
pub fn credentials(value: Option<&[u8]>) -> Credentials<'_> {
    let Some(v) = value else { return Credentials::Missing };
    match v.iter().position(|&c| c == b' ') {
        Some(5) if v[..5].eq_ignore_ascii_case(b"Basic") => Credentials::Basic(v[6..].trim_ascii()),
        Some(6) if v[..6].eq_ignore_ascii_case(b"Bearer") => Credentials::Bearer(v[7..].trim_ascii()),
        _ => Credentials::Unsupported,
    }
}

impl Auth {
    /// The caller an `Authorization` header value makes on `protocol`: with none, the caller a
    /// new connection starts as (refused with `NOAUTH` unless `default` needs no password);
    /// `Basic` and `Bearer` authenticate. A failure is counted and logged (never the password)
    /// and answered with the error to send.
    pub fn caller_for(&self, protocol: Protocol, header: Option<&[u8]>) -> Result<Caller, Error> {
        match credentials(header) {
            Credentials::Missing => match self.new_caller(protocol) {
                c if c.is_authenticated() => Ok(c),
                _ => Err(Error::NoAuth),
            },
            Credentials::Basic(b64) => self.basic(b64).map(|p| Caller::user(protocol, p)).map_err(|e| {
                self.record_failure(protocol, &Self::basic_user(b64), None);
                Error::from(e)
            }),
            Credentials::Bearer(token) => {
                self.bearer(token).map(|p| Caller::user(protocol, p)).inspect_err(|_| {
                    self.record_failure(protocol, "(bearer token)", None);
                })
            }
            Credentials::Unsupported => {
                self.record_failure(protocol, "(unsupported scheme)", None);
                Err(Error::WrongPass)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(credentials(None), Credentials::Missing);
        assert_eq!(credentials(Some(b"Basic YTpi")), Credentials::Basic(b"YTpi"));
        assert_eq!(credentials(Some(b"basic YTpi ")), Credentials::Basic(b"YTpi"));
        assert_eq!(credentials(Some(b"Bearer xyz")), Credentials::Bearer(b"xyz"));
        assert_eq!(credentials(Some(b"bearer  xyz ")), Credentials::Bearer(b"xyz"));
        assert_eq!(credentials(Some(b"Token xyz")), Credentials::Unsupported);
        assert_eq!(credentials(Some(b"Basic")), Credentials::Unsupported);
        assert_eq!(credentials(Some(b"Basicx YTpi")), Credentials::Unsupported);
    }
}
