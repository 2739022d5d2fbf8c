//! Users, permissions and tokens.

pub mod token;
