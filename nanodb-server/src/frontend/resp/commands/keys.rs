//! Key commands: DEL/UNLINK, EXISTS, TYPE, the EXPIRE family, TTL/PTTL, PERSIST, KEYS, SCAN,
//! RENAME, DBSIZE, FLUSHDB/FLUSHALL, RANDOMKEY.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Expiry, KeyType, TypedCommand, cmd};

use super::{Flow, Outcome, Reject, Session, glob_match, glob_prefix, int_arg, is, run};
use crate::frontend::resp::encode;
use crate::frontend::{Context, Run};

const DONE: Outcome = Ok(Flow::Continue);

/// Counts the keys for which `make(key)` answers true; every command is validated before any
/// runs, so a bad key in the middle changes nothing.
fn count_true<C: TypedCommand + Run<Output = bool>>(
    ctx: &Context,
    session: &mut Session<'_>,
    keys: &[Bytes],
    make: fn(Bytes) -> C,
    out: &mut BytesMut,
) -> Outcome {
    let limits = ctx.engine.limits();
    // Every key is checked, and permitted, before any runs: a refused key refuses the whole
    // command and changes nothing.
    for k in keys {
        let c = make(k.clone());
        c.validate(limits)?;
        ctx.authorize(&session.caller, c.need())?;
    }
    let mut n = 0;
    for k in keys {
        n += i64::from(run(ctx, session, make(k.clone()))?);
    }
    encode::int(out, n);
    DONE
}

pub fn del(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    count_true(ctx, session, &args[1..], |key| cmd::Delete { key }, out)
}

pub fn exists(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    count_true(ctx, session, &args[1..], |key| cmd::Exists { key }, out)
}

pub fn type_(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let t = run(ctx, session, cmd::Type { key: args[1].clone() })?;
    encode::simple(out, t.map_or("none", KeyType::as_str));
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
    // Redis: a TTL of zero or less deletes the key (a deadline already past).
    let expiry = if ms <= 0 { Expiry::At(0) } else { Expiry::In(ms.unsigned_abs()) };
    encode::int(out, i64::from(run(ctx, session, cmd::Expire { key: args[1].clone(), expiry })?));
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
    let expire = cmd::Expire { key: args[1].clone(), expiry: Expiry::At(at.max(0).unsigned_abs()) };
    encode::int(out, i64::from(run(ctx, session, expire)?));
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
    let ms = run(ctx, session, cmd::Ttl { key: args[1].clone() })?;
    // Redis rounds the remaining milliseconds to the nearest second.
    encode::int(out, if ms < 0 { ms } else { (ms + 500) / 1000 });
    DONE
}

pub fn pttl(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::Ttl { key: args[1].clone() })?);
    DONE
}

pub fn persist(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let persist = cmd::Expire { key: args[1].clone(), expiry: Expiry::Persist };
    encode::int(out, i64::from(run(ctx, session, persist)?));
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
    let page = run(ctx, session, cmd::Scan { prefix, limit: count, cursor })?;
    let keys =
        page.entries.into_iter().map(|e| e.key).filter(|k| match_all || glob_match(pattern, k)).collect();
    Ok((keys, page.next_cursor))
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
            if let Some(kt) = run(ctx, session, cmd::Type { key: k.clone() })?
                && kt.as_str().as_bytes().eq_ignore_ascii_case(t)
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
    run(ctx, session, cmd::Rename { from: args[1].clone(), to: args[2].clone() })?;
    encode::ok(out);
    DONE
}

pub fn dbsize(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::KeyCount {})?);
    DONE
}

pub fn flush(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match &args[1..] {
        [] => {}
        [mode] if is(mode, "ASYNC") || is(mode, "SYNC") => {}
        _ => return Err(Reject::Syntax),
    }
    run(ctx, session, cmd::Flush {})?;
    encode::ok(out);
    DONE
}

pub fn randomkey(ctx: &Context, session: &mut Session<'_>, _: &[Bytes], out: &mut BytesMut) -> Outcome {
    let key = run(ctx, session, cmd::RandomKey {})?;
    encode::opt_bulk(out, key.as_deref());
    DONE
}
