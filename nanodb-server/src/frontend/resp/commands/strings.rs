//! String commands: SET and its variants, GET and its variants, MGET/MSET, APPEND, STRLEN and the
//! INCR family.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Command, Error, Expiry, PutCondition, Reply};

use super::{Flow, Outcome, Reject, Session, int_arg, is, run, unexpected};
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

/// Writes a string reply (`Reply::Value`) as a bulk string or null.
fn value(out: &mut BytesMut, reply: Reply) -> Outcome {
    match reply {
        Reply::Value(v) => encode::opt_bulk(out, v.as_ref().map(|e| &e.value[..])),
        other => return Err(unexpected(&other)),
    }
    DONE
}

/// Writes `+OK` for an applied put, null for one whose condition failed.
fn put_reply(out: &mut BytesMut, reply: Reply) -> Outcome {
    match reply {
        Reply::Put { applied: true, .. } => encode::ok(out),
        Reply::Put { applied: false, .. } => encode::null(out),
        Reply::Value(_) => return value(out, reply),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn get(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    value(out, run(ctx, Command::Get { key: args[1].clone() })?)
}

pub fn set(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (key, value) = (args[1].clone(), args[2].clone());
    if args.len() == 3 {
        // The hot path: a plain SET is a plain put.
        let cmd = Command::Put { key, value, ttl_ms: 0, condition: PutCondition::Always };
        return put_reply(out, run(ctx, cmd)?);
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
    put_reply(out, run(ctx, Command::Set { key, value, condition, expiry, get })?)
}

pub fn getdel(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    value(out, run(ctx, Command::GetDel { key: args[1].clone() })?)
}

pub fn getex(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let expiry = match &args[2..] {
        [] => Expiry::Keep,
        [p] if is(p, "PERSIST") => Expiry::Persist,
        [o, n] if is(o, "EX") => Expiry::In(ttl_arg(n, 1000, "getex")?),
        [o, n] if is(o, "PX") => Expiry::In(ttl_arg(n, 1, "getex")?),
        [o, n] if is(o, "EXAT") => Expiry::At(ttl_arg(n, 1000, "getex")?),
        [o, n] if is(o, "PXAT") => Expiry::At(ttl_arg(n, 1, "getex")?),
        _ => return Err(Reject::Syntax),
    };
    value(out, run(ctx, Command::GetEx { key: args[1].clone(), expiry })?)
}

pub fn getset(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let cmd = Command::Set {
        key: args[1].clone(),
        value: args[2].clone(),
        condition: PutCondition::Always,
        expiry: Expiry::Persist,
        get: true,
    };
    value(out, run(ctx, cmd)?)
}

pub fn setnx(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let cmd = Command::Put {
        key: args[1].clone(),
        value: args[2].clone(),
        ttl_ms: 0,
        condition: PutCondition::IfAbsent,
    };
    match run(ctx, cmd)? {
        Reply::Put { applied, .. } => encode::int(out, i64::from(applied)),
        other => return Err(unexpected(&other)),
    }
    DONE
}

fn setex_with(ctx: &Context, args: &[Bytes], out: &mut BytesMut, unit_ms: u64, name: &str) -> Outcome {
    let ttl_ms = ttl_arg(&args[2], unit_ms, name)?;
    let cmd = Command::Put {
        key: args[1].clone(),
        value: args[3].clone(),
        ttl_ms,
        condition: PutCondition::Always,
    };
    put_reply(out, run(ctx, cmd)?)
}

pub fn setex(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    setex_with(ctx, args, out, 1000, "setex")
}

pub fn psetex(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    setex_with(ctx, args, out, 1, "psetex")
}

pub fn mget(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::array(out, args.len() - 1);
    for key in &args[1..] {
        // As in Redis, a key of another type reads as null rather than failing the whole MGET.
        match run(ctx, Command::Get { key: key.clone() }) {
            Ok(Reply::Value(Some(e))) => encode::bulk(out, &e.value),
            Ok(_) | Err(Error::WrongType) => encode::null(out),
            Err(e) => {
                // Limits (an empty or oversized key) answer the element with the error.
                super::engine_error(out, &e);
            }
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

pub fn mset(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = pairs(args, "mset")?;
    run(ctx, Command::MultiPut { pairs, only_if_none_exist: false })?;
    encode::ok(out);
    DONE
}

pub fn msetnx(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = pairs(args, "msetnx")?;
    match run(ctx, Command::MultiPut { pairs, only_if_none_exist: true })? {
        Reply::Bool(b) => encode::int(out, i64::from(b)),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn append(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match run(ctx, Command::Append { key: args[1].clone(), value: args[2].clone() })? {
        Reply::Int(n) => encode::int(out, n),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn strlen(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match run(ctx, Command::Get { key: args[1].clone() })? {
        Reply::Value(v) => encode::int(out, v.map_or(0, |e| e.value.len() as i64)),
        other => return Err(unexpected(&other)),
    }
    DONE
}

fn incr_by(ctx: &Context, key: &Bytes, delta: i64, out: &mut BytesMut) -> Outcome {
    match run(ctx, Command::Incr { key: key.clone(), delta })? {
        Reply::Int(n) => encode::int(out, n),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn incr(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, &args[1], 1, out)
}

pub fn decr(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, &args[1], -1, out)
}

pub fn incrby(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    incr_by(ctx, &args[1], int_arg(&args[2])?, out)
}

pub fn decrby(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let n = int_arg(&args[2])?;
    let delta = n.checked_neg().ok_or_else(|| Reject::Msg("ERR decrement would overflow".into()))?;
    incr_by(ctx, &args[1], delta, out)
}

pub fn incrbyfloat(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    if nanodb_protocol::command::parse_f64(&args[2]).is_err() {
        return Err(Reject::NotFloat);
    }
    match run(ctx, Command::IncrFloat { key: args[1].clone(), delta: args[2].clone() })? {
        Reply::Bytes(Some(b)) => encode::bulk(out, &b),
        other => return Err(unexpected(&other)),
    }
    DONE
}
