//! `nanodb-cli txn`: an etcd-style transaction (compares, then the success or the failure
//! commands, applied as one atomic group by the server; see `nanodb_protocol::txn`).
//!
//! As in etcdctl, the parts come from flags (`--compare`, `--success`, `--failure`, each
//! repeatable) or, with none given, from stdin: compares, a blank line, success commands, a blank
//! line, failure commands. A compare is one line in the CLI's word syntax (quotes and backslash
//! escapes as on the command line):
//!
//! ```text
//! version KEY OP N        (alias ver; a missing key has version 0)
//! value KEY OP VALUE      (alias val; false for a missing key or one of another type)
//! exists KEY  |  missing KEY
//! ```
//! with OP one of `=`, `!=`, `<`, `>`. A command is any one-request CLI command on named keys
//! (`put`, `get`, `del KEY`, `incr`, `hset`, `lpush`...); the server refuses the others.

use std::io::{BufRead, Read};

use bytes::Bytes;
use clap::Parser;
use nanodb_protocol::{Command, Compare, CompareOp, CompareTarget, cmd};

use crate::args::{Cmd, Line};
use crate::client::Failure;
use crate::words::split;

/// Most lines read from stdin: far above the server's own limits on compares and operations, so
/// it only bounds a mistaken `< /dev/zero`-like input before the server would refuse it.
const MAX_LINES: usize = 100_000;
/// Longest line read from stdin (a value of up to the default frame limit, escaped).
const MAX_LINE: usize = 4 * nanodb_protocol::frame::DEFAULT_MAX_FRAME_LEN;

fn bytes(word: &str) -> Result<Bytes, Failure> {
    crate::run::arg(std::ffi::OsStr::new(word))
}

/// Parses one compare line.
pub fn parse_compare(line: &str) -> Result<Compare, Failure> {
    let usage = || {
        Failure::Usage(format!(
            "`{line}`: a compare is `version KEY OP N`, `value KEY OP VALUE`, `exists KEY` or `missing KEY` (OP: = != < >)"
        ))
    };
    let words = split(line).map_err(|e| Failure::Usage(format!("`{line}`: {e}")))?;
    let op = |w: &str| match w {
        "=" | "==" => Ok(CompareOp::Equal),
        "!=" => Ok(CompareOp::NotEqual),
        "<" => Ok(CompareOp::Less),
        ">" => Ok(CompareOp::Greater),
        _ => Err(usage()),
    };
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["version" | "ver", key, o, n] => {
            let n =
                n.parse::<u64>().map_err(|_| Failure::Usage(format!("`{line}`: `{n}` is not a version")))?;
            Ok(Compare { key: bytes(key)?, op: op(o)?, target: CompareTarget::Version(n) })
        }
        ["value" | "val", key, o, v] => {
            Ok(Compare { key: bytes(key)?, op: op(o)?, target: CompareTarget::Value(bytes(v)?) })
        }
        ["exists", key] => {
            Ok(Compare { key: bytes(key)?, op: CompareOp::Equal, target: CompareTarget::Exists(true) })
        }
        ["missing", key] => {
            Ok(Compare { key: bytes(key)?, op: CompareOp::Equal, target: CompareTarget::Exists(false) })
        }
        _ => Err(usage()),
    }
}

/// Parses one operation line: a CLI command that is one request.
pub fn parse_operation(line: &str) -> Result<Command, Failure> {
    let words = split(line).map_err(|e| Failure::Usage(format!("`{line}`: {e}")))?;
    let parsed = Line::try_parse_from(&words).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("not a command").trim_start_matches("error: ").to_string();
        Failure::Usage(format!("`{line}`: {first}"))
    })?;
    if let Cmd::Put { value, .. } | Cmd::Hset { value, .. } = &parsed.command
        && value.value.as_deref() == Some(std::ffi::OsStr::new("-"))
    {
        {
            return Err(Failure::Usage(format!(
                "`{line}`: `-` (stdin) cannot be a value inside a transaction"
            )));
        }
    }
    match crate::run::to_command(&parsed.command)? {
        Some(c) => Ok(c),
        None => Err(Failure::Usage(format!(
            "`{line}`: only a command that is one request can run in a transaction"
        ))),
    }
}

/// Builds the transaction from the flags' lines.
pub fn from_parts(compares: &[String], success: &[String], failure: &[String]) -> Result<Command, Failure> {
    Ok(Command::Txn(cmd::Txn {
        compares: compares.iter().map(|l| parse_compare(l)).collect::<Result<_, _>>()?,
        success: success.iter().map(|l| parse_operation(l)).collect::<Result<_, _>>()?,
        failure: failure.iter().map(|l| parse_operation(l)).collect::<Result<_, _>>()?,
    }))
}

/// Reads the three parts from `input`, separated by blank lines (a part may be empty); lines
/// starting with `#` are comments.
pub fn read_parts<R: BufRead>(input: &mut R) -> Result<Command, Failure> {
    let mut parts: [Vec<String>; 3] = Default::default();
    let mut part = 0;
    let mut line = Vec::new();
    for n in 0.. {
        if n == MAX_LINES {
            return Err(Failure::Usage(format!(
                "a transaction read from stdin has at most {MAX_LINES} lines"
            )));
        }
        line.clear();
        let read = (&mut *input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Usage(format!("cannot read the transaction from stdin: {e}")))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            return Err(Failure::Usage(format!("line {}: longer than {MAX_LINE} bytes", n + 1)));
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| Failure::Usage(format!("line {}: not UTF-8 (write bytes as \\xNN escapes)", n + 1)))?
            .trim();
        if text.starts_with('#') {
            continue;
        }
        if text.is_empty() {
            part += 1;
            if part == 3 {
                break;
            }
            continue;
        }
        parts[part].push(text.to_string());
    }
    let [compares, success, failure] = parts;
    from_parts(&compares, &success, &failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn compares_parse_every_form() {
        let c = parse_compare("version k > 3").expect("version");
        assert_eq!(c, Compare { key: b("k"), op: CompareOp::Greater, target: CompareTarget::Version(3) });
        let c = parse_compare(r#"val "a key" != "x\x00""#).expect("value");
        assert_eq!(c.key, b("a key"));
        assert_eq!(c.target, CompareTarget::Value(Bytes::from_static(b"x\x00")));
        assert_eq!(parse_compare("missing k").expect("missing").target, CompareTarget::Exists(false));
        assert_eq!(parse_compare("exists k").expect("exists").target, CompareTarget::Exists(true));
    }

    #[test]
    fn bad_compares_say_the_syntax() {
        for bad in ["version k >= 3", "version k = x", "size k = 3", "exists", "value k ="] {
            let Err(Failure::Usage(m)) = parse_compare(bad) else { panic!("{bad} accepted") };
            assert!(m.contains(bad), "{m}");
        }
    }

    #[test]
    fn operations_are_cli_commands_of_one_request() {
        assert!(matches!(parse_operation("put k v --ttl 10s").expect("put"), Command::Put(_)));
        assert!(matches!(parse_operation("del k").expect("del"), Command::Delete(_)));
        assert!(matches!(parse_operation("incr n -2").expect("incr"), Command::Incr(c) if c.delta == -2));
        for bad in ["scan --prefix a", "del a b", "nosuch k", "put k -", "get"] {
            assert!(matches!(parse_operation(bad), Err(Failure::Usage(_))), "{bad} accepted");
        }
    }

    #[test]
    fn stdin_parts_are_split_by_blank_lines() {
        let text =
            "# move 10 from a to b\nversion a = 2\nversion b = 5\n\nput a 90\nput b 110\n\nget a\nget b\n";
        let Command::Txn(t) = read_parts(&mut text.as_bytes()).expect("parsed") else { panic!("not a txn") };
        assert_eq!((t.compares.len(), t.success.len(), t.failure.len()), (2, 2, 2));
        // No failure part, and no compares: an unconditional atomic group.
        let Command::Txn(t) = read_parts(&mut "\nput a 1\nput b 2\n".as_bytes()).expect("parsed") else {
            panic!("not a txn")
        };
        assert_eq!((t.compares.len(), t.success.len(), t.failure.len()), (0, 2, 0));
        assert!(matches!(read_parts(&mut "version a = 1\n\nput a\n".as_bytes()), Err(Failure::Usage(_))));
        assert!(
            matches!(read_parts(&mut &b"\nput a \xff\n"[..]), Err(Failure::Usage(m)) if m.contains("UTF-8"))
        );
    }
}
