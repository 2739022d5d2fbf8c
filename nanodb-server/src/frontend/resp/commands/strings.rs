//! String commands: SET and its variants, GET and its variants, MGET/MSET, APPEND, STRLEN and the
//! INCR family.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Command, Entry, Error, Expiry, PutCondition, PutOutcome, Reply, TypedCommand, cmd};

use super::{Flow, Outcome, Reject, Session, int_arg, is, run};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

fn invalid_expire(cmd: &str) -> Reject {
    Reject::Msg(format!("ERR invalid expire time in '{cmd}' command"))
}

/// A positive TTL argument in `unit_ms` units, as milliseconds.
fn ttl_arg(b: &[u8], unit_ms: u64, cmd: &str) -> Result<u64, Reject> {
    let n = int_arg(b)?;
    if n <= 0 {
        return Err(invalid_expire(cmd));
    }
    (n as u64).checked_mul(unit_ms).ok_or_else(|| invalid_expire(cmd))
}

/// Writes a string value as a bulk string, or null when missing.
fn entry_reply(out: &mut BytesMut, entry: Option<Entry>) -> Outcome {
    encode::opt_bulk(out, entry.as_ref().map(|e| &e.value[..]));
    DONE
}

/// Writes `+OK` for an applied put, null for one whose condition failed.
fn put_reply(out: &mut BytesMut, put: PutOutcome) -> Outcome {
    if put.applied {
        encode::ok(out)
    } else {
        encode::null(out)
    }
    DONE
}

pub fn get(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    entry_reply(out, run(ctx, session, cmd::Get { key: args[1].clone() })?)
}

pub fn set(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (key, value) = (args[1].clone(), args[2].clone());
    if args.len() == 3 {
        // The hot path: a plain SET is a plain put.
        let put = cmd::Put { key, value, expiry: Expiry::Persist, condition: PutCondition::Always };
        return put_reply(out, run(ctx, session, put)?);
    }
    let mut condition = PutCondition::Always;
    let mut expiry = Expiry::Persist;
    let mut get = false;
    let mut i = 3;
    while i < args.len() {
        let a = &args[i];
        let next = args.get(i + 1);
        let has_expiry = expiry != Expiry::Persist;
        if is(a, "NX") && condition == PutCondition::Always {
            condition = PutCondition::IfAbsent;
        } else if is(a, "XX") && condition == PutCondition::Always {
            condition = PutCondition::IfPresent;
        } else if is(a, "GET") {
            get = true;
        } else if is(a, "KEEPTTL") && !has_expiry {
            expiry = Expiry::Keep;
        } else if let (Some(n), false) = (next, has_expiry) {
            expiry = if is(a, "EX") {
                Expiry::In(ttl_arg(n, 1000, "set")?)
            } else if is(a, "PX") {
                Expiry::In(ttl_arg(n, 1, "set")?)
            } else if is(a, "EXAT") {
                Expiry::At(ttl_arg(n, 1000, "set")?)
            } else if is(a, "PXAT") {
                Expiry::At(ttl_arg(n, 1, "set")?)
            } else {
                return Err(Reject::Syntax);
            };
            i += 1;
        } else {
            return Err(Reject::Syntax);
        }
        i += 1;
    }
    if get {
        entry_reply(out, run(ctx, session, cmd::GetSet { key, value, expiry, condition })?)
    } else {
        put_reply(out, run(ctx, session, cmd::Put { key, value, expiry, condition })?)
    }
}

pub fn getdel(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    entry_reply(out, run(ctx, session, cmd::GetDel { key: args[1].clone() })?)
}

pub fn getex(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let expiry = match &args[2..] {
        [] => Expiry::Keep,
        [p] if is(p, "PERSIST") => Expiry::Persist,
        [o, n] if is(o, "EX") => Expiry::In(ttl_arg(n, 1000, "getex")?),
        [o, n] if is(o, "PX") => Expiry::In(ttl_arg(n, 1, "getex")?),
        [o, n] if is(o, "EXAT") => Expiry::At(ttl_arg(n, 1000, "getex")?),
        [o, n] if is(o, "PXAT") => Expiry::At(ttl_arg(n, 1, "getex")?),
        _ => return Err(Reject::Syntax),
    };
    entry_reply(out, run(ctx, session, cmd::GetEx { key: args[1].clone(), expiry })?)
}

pub fn getset(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let getset = cmd::GetSet {
        key: args[1].clone(),
        value: args[2].clone(),
        condition: PutCondition::Always,
        expiry: Expiry::Persist,
    };
    entry_reply(out, run(ctx, session, getset)?)
}

pub fn setnx(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let put = cmd::Put {
        key: args[1].clone(),
        value: args[2].clone(),
        expiry: Expiry::Persist,
        condition: PutCondition::IfAbsent,
    };
    encode::int(out, i64::from(run(ctx, session, put)?.applied));
    DONE
}

fn setex_with(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    out: &mut BytesMut,
    unit_ms: u64,
    name: &str,
) -> Outcome {
    let ttl_ms = ttl_arg(&args[2], unit_ms, name)?;
    let put = cmd::Put {
        key: args[1].clone(),
        value: args[3].clone(),
        expiry: Expiry::In(ttl_ms),
        condition: PutCondition::Always,
    };
    put_reply(out, run(ctx, session, put)?)
}

pub fn setex(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    setex_with(ctx, session, args, out, 1000, "setex")
}

pub fn psetex(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    setex_with(ctx, session, args, out, 1, "psetex")
}

/// MGET reads its keys as one atomic group: it never sees part of an MSET or a transaction.
pub fn mget(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let keys = &args[1..];
    // Limits (an empty or oversized key) answer their element with the error, as before; the
    // others are read together.
    let checked: Vec<Result<(), Error>> =
        keys.iter().map(|k| cmd::Get { key: k.clone() }.validate(ctx.engine.limits())).collect();
    let gets = keys
        .iter()
        .zip(&checked)
        .filter(|(_, c)| c.is_ok())
        .map(|(k, _)| Command::Get(cmd::Get { key: k.clone() }))
        .collect();
    let outcome = run(ctx, session, cmd::Txn { compares: vec![], success: gets, failure: vec![] })?;
    let mut results = outcome.results.into_iter();
    encode::array(out, keys.len());
    for check in checked {
        let result = match check {
            Ok(()) => results.next().unwrap_or(Err(Error::Internal)),
            Err(e) => Err(e),
        };
        match result {
            Ok(Reply::Value(Some(e))) => encode::bulk(out, &e.value),
            // As in Redis, a key of another type reads as null rather than failing the whole MGET.
            Ok(_) | Err(Error::WrongType) => encode::null(out),
            Err(e) => super::engine_error(out, &e),
        }
    }
    DONE
}

fn pairs(args: &[Bytes], name: &str) -> Result<Vec<(Bytes, Bytes)>, Reject> {
    if args.len().is_multiple_of(2) {
        return Err(Reject::Msg(format!("ERR wrong number of arguments for '{name}' command")));
    }
    Ok(args[1..].chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect())
}

pub fn mset(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = pairs(args, "mset")?;
    run(ctx, session, cmd::MultiPut { pairs, only_if_none_exist: false })?;
    encode::ok(out);
    DONE
}

pub fn msetnx(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = pairs(args, "msetnx")?;
    let written = run(ctx, session, cmd::MultiPut { pairs, only_if_none_exist: true })?;
    encode::int(out, i64::from(written));
    DONE
}

pub fn append(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::Append { key: args[1].clone(), value: args[2].clone() })?);
    DONE
}

pub fn getrange(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (start, end) = (int_arg(&args[2])?, int_arg(&args[3])?);
    encode::bulk(out, &run(ctx, session, cmd::GetRange { key: args[1].clone(), start, end })?);
    DONE
}

pub fn strlen(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let entry = run(ctx, session, cmd::Get { key: args[1].clone() })?;
    encode::int(out, entry.map_or(0, |e| e.value.len() as i64));
    DONE
}

fn incr_by(ctx: &Context, session: &mut Session<'_>, key: &Bytes, delta: i64, out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::Incr { key: key.clone(), delta })?);
    DONE
}

pub fn incr(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, session, &args[1], 1, out)
}

pub fn decr(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, session, &args[1], -1, out)
}

pub fn incrby(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, session, &args[1], int_arg(&args[2])?, out)
}

pub fn decrby(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let n = int_arg(&args[2])?;
    let delta = n.checked_neg().ok_or_else(|| Reject::Msg("ERR decrement would overflow".into()))?;
    incr_by(ctx, session, &args[1], delta, out)
}

pub fn incrbyfloat(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    if nanodb_protocol::command::parse_f64(&args[2]).is_err() {
        return Err(Reject::NotFloat);
    }
    let text = run(ctx, session, cmd::IncrFloat { key: args[1].clone(), delta: args[2].clone() })?;
    encode::bulk(out, &text);
    DONE
}
