//! `--pipe`: bulk loading from stdin. One command per line in the REPL's syntax (`put KEY VALUE`
//! being the common one, parsed by a fast path; anything else goes through the full parser),
//! sent as BATCH frames of `--pipe-batch` operations with many frames in flight, so the load runs
//! at the server's speed rather than at one round trip per line. Like `redis-cli --pipe`, it ends
//! with a count of replies and errors, and exits 1 if any line failed.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStringExt;

use bytes::Bytes;
use clap::Parser;
use nanodb_protocol::{Command, Expiry, Limits, PutCondition, Reply, Request, Response, cmd};

use crate::args::{Cmd, Conn, Line};
use crate::client::{Client, Failure};

/// BATCH frames in flight before the reader waits for replies.
const WINDOW: usize = 32;
/// A batch is sent once its operations hold this many bytes, whatever its count.
const BATCH_BYTES: usize = 1024 * 1024;
/// Errors printed in full; the rest are only counted.
const SHOWN_ERRORS: usize = 10;

/// Parses one line: `put K V` without quotes or escapes directly, anything else as the REPL does.
fn parse(line: &[u8]) -> Result<Command, String> {
    let mut it = line.split(|b| *b == b' ' || *b == b'\t').filter(|w| !w.is_empty());
    if let (Some(verb), Some(k), Some(v), None) = (it.next(), it.next(), it.next(), it.next())
        && (verb == b"put" || verb == b"set")
        && v != b"-"
        && !line.iter().any(|b| matches!(b, b'"' | b'\'' | b'\\'))
    {
        return Ok(Command::Put(cmd::Put {
            key: Bytes::copy_from_slice(k),
            value: Bytes::copy_from_slice(v),
            expiry: Expiry::Persist,
            condition: PutCondition::Always,
        }));
    }
    let text = std::str::from_utf8(line).map_err(|_| {
        "not UTF-8: write binary keys and values with \\xNN escapes in --pipe input".to_string()
    })?;
    let words = crate::words::split(text)?;
    let args: Vec<OsString> = words.into_iter().map(|w| OsString::from_vec(w.into_bytes())).collect();
    let parsed = Line::try_parse_from(args).map_err(|e| e.render().to_string().trim().to_string())?;
    if let Cmd::Put { value, .. } | Cmd::Hset { value, .. } = &parsed.command
        && (value.value.as_deref() == Some(std::ffi::OsStr::new("-")) || value.value_file.is_some())
    {
        return Err("values come from the line itself with --pipe (not `-` or --value-file)".into());
    }
    match crate::run::to_command(&parsed.command) {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            Err("this command cannot be piped (one request per line: no scan, watch, del of several keys)"
                .into())
        }
        Err(f) => Err(f.message()),
    }
}

struct Pending {
    /// Line number of each operation in the batch.
    lines: Vec<u64>,
}

#[derive(Default)]
struct Tally {
    replies: u64,
    errors: u64,
}

impl Tally {
    fn error(&mut self, line: u64, msg: &str) {
        self.errors += 1;
        if self.errors as usize <= SHOWN_ERRORS {
            eprintln!("line {line}: {msg}");
        }
    }
}

async fn settle(client: &mut Client, p: Pending, t: &mut Tally) -> Result<(), Failure> {
    match client.next_reply().await? {
        Response::Reply(Reply::Batch(results)) => {
            for (r, line) in results.iter().zip(&p.lines) {
                match r {
                    Ok(_) => t.replies += 1,
                    Err(e) => t.error(*line, &format!("(error) {} {e}", e.code().as_str())),
                }
            }
        }
        Response::Error(e) => {
            for line in &p.lines {
                t.error(*line, &format!("(error) {} {e}", e.code().as_str()));
            }
        }
        other => return Err(Failure::Connect(format!("unexpected answer to a batch: {other:?}"))),
    }
    Ok(())
}

/// Loads stdin; the exit code (0, or 1 when a line failed).
pub async fn run(conn: &Conn, batch: usize, out: &mut dyn Write) -> Result<u8, Failure> {
    let mut client = Client::connect(conn).await?;
    let limits = Limits::default();
    let mut input = std::io::stdin().lock();
    let mut in_flight = std::collections::VecDeque::new();
    let mut tally = Tally::default();
    let mut ops = Vec::with_capacity(batch);
    let mut pending = Pending { lines: Vec::with_capacity(batch) };
    let mut bytes = 0;
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let eof =
            input.read_until(b'\n', &mut line).map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?
                == 0;
        if !eof {
            n += 1;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                match parse(&line).and_then(|c| {
                    c.validate(&limits).map(|()| c).map_err(|e| format!("(error) {} {e}", e.code().as_str()))
                }) {
                    Ok(c) => {
                        bytes += line.len();
                        ops.push(c);
                        pending.lines.push(n);
                    }
                    Err(e) => tally.error(n, &e),
                }
            }
        }
        if !ops.is_empty() && (eof || ops.len() >= batch || bytes >= BATCH_BYTES) {
            let sent = std::mem::replace(&mut ops, Vec::with_capacity(batch));
            client.feed(Request::Command(Command::Batch(cmd::Batch { ops: sent }))).await?;
            in_flight
                .push_back(std::mem::replace(&mut pending, Pending { lines: Vec::with_capacity(batch) }));
            bytes = 0;
            if in_flight.len() >= WINDOW || eof {
                client.flush().await?;
            }
            while in_flight.len() >= WINDOW {
                if let Some(p) = in_flight.pop_front() {
                    settle(&mut client, p, &mut tally).await?;
                }
            }
        }
        if eof {
            break;
        }
    }
    client.flush().await?;
    while let Some(p) = in_flight.pop_front() {
        settle(&mut client, p, &mut tally).await?;
    }
    let _ = writeln!(out, "All data transferred. errors: {}, replies: {}", tally.errors, tally.replies);
    Ok(u8::from(tally.errors > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_and_full_paths_agree() {
        let fast = parse(b"put k v").expect("fast");
        let full = parse(b"put k v --ttl 10").expect("full");
        let (Command::Put(a), Command::Put(b)) = (fast, full) else { panic!("puts") };
        assert_eq!((a.key, a.value), (b.key.clone(), b.value.clone()));
        assert_eq!(b.expiry, Expiry::In(10_000));
        let esc = parse(b"put \"a b\" \\xff").expect("escapes");
        assert!(matches!(esc, Command::Put(p) if p.key == "a b" && p.value == Bytes::from_static(b"\xff")));
    }

    #[test]
    fn bad_lines_are_explained() {
        assert!(parse(b"frobnicate x").expect_err("an error").contains("frobnicate"));
        assert!(parse(b"incr k notanumber").expect_err("an error").contains("notanumber"));
        assert!(parse(b"scan --prefix a").expect_err("an error").contains("cannot be piped"));
        assert!(parse(b"put k \xff v").expect_err("an error").contains("UTF-8"));
        assert!(parse(b"put k -").expect_err("an error").contains("--pipe"));
    }
}
