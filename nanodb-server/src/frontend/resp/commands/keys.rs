//! Key commands: DEL/UNLINK, EXISTS, TYPE, the EXPIRE family, TTL/PTTL, PERSIST, KEYS, SCAN,
//! RENAME, DBSIZE, FLUSHDB/FLUSHALL, RANDOMKEY.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Command, Reply};

use super::{Flow, Outcome, Reject, Session, glob_match, glob_prefix, int_arg, is, run, unexpected};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

fn bool_of(reply: Reply) -> Result<bool, Reject> {
    match reply {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

fn int_of(reply: Reply) -> Result<i64, Reject> {
    match reply {
        Reply::Int(n) => Ok(n),
        other => Err(unexpected(&other)),
    }
}

/// Counts the keys for which `make(key)` answers true; every command is validated before any
/// runs, so a bad key in the middle changes nothing.
fn count_true(
    ctx: &Context,
    session: &mut Session<'_>,
    keys: &[Bytes],
    make: fn(Bytes) -> Command,
    out: &mut BytesMut,
) -> Outcome {
    let limits = ctx.engine.limits();
    for k in keys {
        make(k.clone()).validate(limits)?;
    }
    let mut n = 0;
    for k in keys {
        n += i64::from(bool_of(run(ctx, session, make(k.clone()))?)?);
    }
    encode::int(out, n);
    DONE
}

pub fn del(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    count_true(ctx, session, &args[1..], |key| Command::Delete { key }, out)
}

pub fn exists(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    count_true(ctx, session, &args[1..], |key| Command::Exists { key }, out)
}

pub fn type_(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match run(ctx, session, Command::Type { key: args[1].clone() })? {
        Reply::Bytes(Some(t)) => encode::simple(out, std::str::from_utf8(&t).unwrap_or("none")),
        other => return Err(unexpected(&other)),
    }
    DONE
}

/// EXPIRE-family options (NX, XX, GT, LT) are not supported yet; they are refused, not ignored.
fn no_options(args: &[Bytes]) -> Result<(), Reject> {
    if args.len() > 3 {
        return Err(Reject::Msg(format!("ERR Unsupported option {}", String::from_utf8_lossy(&args[3]))));
    }
    Ok(())
}

fn relative(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    unit_ms: i64,
    name: &str,
    out: &mut BytesMut,
) -> Outcome {
    no_options(args)?;
    let n = int_arg(&args[2])?;
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| Reject::Msg(format!("ERR invalid expire time in '{name}' command")))?;
    // Redis: a TTL of zero or less deletes the key (the engine's 0 means "expire now").
    let cmd = Command::Expire { key: args[1].clone(), ttl_ms: ms.max(0) };
    encode::int(out, i64::from(bool_of(run(ctx, session, cmd)?)?));
    DONE
}

fn absolute(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    unit_ms: i64,
    name: &str,
    out: &mut BytesMut,
) -> Outcome {
    no_options(args)?;
    let n = int_arg(&args[2])?;
    let at = n
        .checked_mul(unit_ms)
        .ok_or_else(|| Reject::Msg(format!("ERR invalid expire time in '{name}' command")))?;
    let cmd = Command::ExpireAt { key: args[1].clone(), at_ms: at.max(0) as u64 };
    encode::int(out, i64::from(bool_of(run(ctx, session, cmd)?)?));
    DONE
}

pub fn expire(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    relative(ctx, session, args, 1000, "expire", out)
}

pub fn pexpire(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    relative(ctx, session, args, 1, "pexpire", out)
}

pub fn expireat(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    absolute(ctx, session, args, 1000, "expireat", out)
}

pub fn pexpireat(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    absolute(ctx, session, args, 1, "pexpireat", out)
}

pub fn ttl(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let ms = int_of(run(ctx, session, Command::Ttl { key: args[1].clone() })?)?;
    // Redis rounds the remaining milliseconds to the nearest second.
    encode::int(out, if ms < 0 { ms } else { (ms + 500) / 1000 });
    DONE
}

pub fn pttl(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, int_of(run(ctx, session, Command::Ttl { key: args[1].clone() })?)?);
    DONE
}

pub fn persist(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let cmd = Command::Expire { key: args[1].clone(), ttl_ms: -1 };
    encode::int(out, i64::from(bool_of(run(ctx, session, cmd)?)?));
    DONE
}

/// One engine scan page under the pattern's literal prefix: the matching keys and the next cursor.
fn scan_page(
    ctx: &Context,
    session: &mut Session<'_>,
    pattern: &[u8],
    count: u32,
    cursor: Bytes,
) -> Result<(Vec<Bytes>, Bytes), Reject> {
    let prefix = Bytes::copy_from_slice(glob_prefix(pattern));
    let match_all = pattern == b"*" || pattern.is_empty();
    match run(ctx, session, Command::Scan { prefix, limit: count, cursor })? {
        Reply::Scan { entries, next_cursor } => {
            let keys =
                entries.into_iter().map(|e| e.key).filter(|k| match_all || glob_match(pattern, k)).collect();
            Ok((keys, next_cursor))
        }
        other => Err(unexpected(&other)),
    }
}

pub fn keys(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let page = ctx.engine.limits().max_scan_page;
    let mut all = Vec::new();
    let mut cursor = Bytes::new();
    loop {
        let (keys, next) = scan_page(ctx, session, &args[1], page, cursor)?;
        all.extend(keys);
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    encode::array(out, all.len());
    for k in &all {
        encode::bulk(out, k);
    }
    DONE
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]. The client sees decimal cursors; each maps
/// to the engine's opaque cursor in the session (a cursor this connection did not issue, or one
/// forgotten, is an error rather than a silent restart).
pub fn scan(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let n = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reject::Msg("ERR invalid cursor".into()))?;
    let cursor = if n == 0 {
        Bytes::new()
    } else {
        session.cursor(n).ok_or_else(|| Reject::Msg("ERR invalid cursor".into()))?
    };
    let mut pattern: &[u8] = b"*";
    let mut count = 10u32;
    let mut type_filter: Option<&Bytes> = None;
    let mut i = 2;
    while i < args.len() {
        let Some(v) = args.get(i + 1) else { return Err(Reject::Syntax) };
        if is(&args[i], "MATCH") {
            pattern = v;
        } else if is(&args[i], "COUNT") {
            let c = int_arg(v)?;
            if c < 1 {
                return Err(Reject::Syntax);
            }
            count = c.min(i64::from(ctx.engine.limits().max_scan_page)) as u32;
        } else if is(&args[i], "TYPE") {
            type_filter = Some(v);
        } else {
            return Err(Reject::Syntax);
        }
        i += 2;
    }
    let (mut keys, next) = scan_page(ctx, session, pattern, count, cursor)?;
    if let Some(t) = type_filter {
        let mut kept = Vec::with_capacity(keys.len());
        for k in keys {
            if let Reply::Bytes(Some(kt)) = run(ctx, session, Command::Type { key: k.clone() })?
                && kt.eq_ignore_ascii_case(t)
            {
                kept.push(k);
            }
        }
        keys = kept;
    }
    let next_n = if next.is_empty() { 0 } else { session.save_cursor(next) };
    encode::array(out, 2);
    let mut digits = BytesMut::new();
    encode::decimal(&mut digits, next_n as i64);
    encode::bulk(out, &digits);
    encode::array(out, keys.len());
    for k in &keys {
        encode::bulk(out, k);
    }
    DONE
}

pub fn rename(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    run(ctx, session, Command::Rename { from: args[1].clone(), to: args[2].clone() })?;
    encode::ok(out);
    DONE
}

pub fn dbsize(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, int_of(run(ctx, session, Command::KeyCount)?)?);
    DONE
}

pub fn flush(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match &args[1..] {
        [] => {}
        [mode] if is(mode, "ASYNC") || is(mode, "SYNC") => {}
        _ => return Err(Reject::Syntax),
    }
    run(ctx, session, Command::Flush)?;
    encode::ok(out);
    DONE
}

pub fn randomkey(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    match run(ctx, session, Command::RandomKey)? {
        Reply::Bytes(k) => encode::opt_bulk(out, k.as_deref()),
        other => return Err(unexpected(&other)),
    }
    DONE
}
