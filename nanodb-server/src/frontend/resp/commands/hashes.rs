//! Hash commands: HSET/HMSET, HGET, HMGET, HDEL, HGETALL, HEXISTS, HLEN, HINCRBY, HKEYS, HVALS,
//! HSETNX.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{Command, Reply};

use super::{Flow, Outcome, Reject, Session, int_arg, run, unexpected};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

/// HSET key field value [field value ...]; how many fields are new. Every field is validated
/// before any is written.
fn set_fields(ctx: &Context, args: &[Bytes], name: &str) -> Result<i64, Reject> {
    if !args.len().is_multiple_of(2) {
        return Err(Reject::Msg(format!("ERR wrong number of arguments for '{name}' command")));
    }
    let cmds: Vec<Command> = args[2..]
        .chunks_exact(2)
        .map(|p| Command::HashSet { key: args[1].clone(), field: p[0].clone(), value: p[1].clone() })
        .collect();
    for c in &cmds {
        c.validate(ctx.engine.limits())?;
    }
    let mut created = 0;
    for c in cmds {
        match run(ctx, c)? {
            Reply::Bool(b) => created += i64::from(b),
            other => return Err(unexpected(&other)),
        }
    }
    Ok(created)
}

pub fn hset(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, set_fields(ctx, args, "hset")?);
    DONE
}

pub fn hmset(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    set_fields(ctx, args, "hmset")?;
    encode::ok(out);
    DONE
}

fn field(ctx: &Context, key: &Bytes, field: &Bytes) -> Result<Option<Bytes>, Reject> {
    match run(ctx, Command::HashGet { key: key.clone(), field: field.clone() })? {
        Reply::Bytes(v) => Ok(v),
        other => Err(unexpected(&other)),
    }
}

pub fn hget(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::opt_bulk(out, field(ctx, &args[1], &args[2])?.as_deref());
    DONE
}

pub fn hmget(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let values = args[2..].iter().map(|f| field(ctx, &args[1], f)).collect::<Result<Vec<_>, _>>()?;
    encode::array(out, values.len());
    for v in &values {
        encode::opt_bulk(out, v.as_deref());
    }
    DONE
}

pub fn hdel(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let mut n = 0;
    for f in &args[2..] {
        match run(ctx, Command::HashDelete { key: args[1].clone(), field: f.clone() })? {
            Reply::Bool(b) => n += i64::from(b),
            other => return Err(unexpected(&other)),
        }
    }
    encode::int(out, n);
    DONE
}

fn all(ctx: &Context, key: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Reject> {
    match run(ctx, Command::HashGetAll { key: key.clone() })? {
        Reply::Pairs(p) => Ok(p),
        other => Err(unexpected(&other)),
    }
}

pub fn hgetall(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, &args[1])?;
    encode::array(out, pairs.len() * 2);
    for (f, v) in &pairs {
        encode::bulk(out, f);
        encode::bulk(out, v);
    }
    DONE
}

pub fn hkeys(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, &args[1])?;
    encode::array(out, pairs.len());
    pairs.iter().for_each(|(f, _)| encode::bulk(out, f));
    DONE
}

pub fn hvals(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, &args[1])?;
    encode::array(out, pairs.len());
    pairs.iter().for_each(|(_, v)| encode::bulk(out, v));
    DONE
}

pub fn hexists(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, i64::from(field(ctx, &args[1], &args[2])?.is_some()));
    DONE
}

pub fn hlen(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    match run(ctx, Command::HashLen { key: args[1].clone() })? {
        Reply::Int(n) => encode::int(out, n),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn hincrby(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let delta = int_arg(&args[3])?;
    match run(ctx, Command::HashIncr { key: args[1].clone(), field: args[2].clone(), delta })? {
        Reply::Int(n) => encode::int(out, n),
        other => return Err(unexpected(&other)),
    }
    DONE
}

pub fn hsetnx(ctx: &Context, _: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let cmd =
        Command::HashSetIfAbsent { key: args[1].clone(), field: args[2].clone(), value: args[3].clone() };
    match run(ctx, cmd)? {
        Reply::Bool(b) => encode::int(out, i64::from(b)),
        other => return Err(unexpected(&other)),
    }
    DONE
}
