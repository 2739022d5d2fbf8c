//! Hash commands: HSET/HMSET, HGET, HMGET, HDEL, HGETALL, HEXISTS, HLEN, HINCRBY, HKEYS, HVALS,
//! HSETNX.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{TypedCommand, cmd};

use super::{Flow, Outcome, Reject, Session, int_arg, run};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

/// HSET key field value [field value ...]; how many fields are new. Every field is validated
/// before any is written.
fn set_fields(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], name: &str) -> Result<i64, Reject> {
    if !args.len().is_multiple_of(2) {
        return Err(Reject::Msg(format!("ERR wrong number of arguments for '{name}' command")));
    }
    let sets: Vec<cmd::HashSet> = args[2..]
        .chunks_exact(2)
        .map(|p| cmd::HashSet { key: args[1].clone(), field: p[0].clone(), value: p[1].clone() })
        .collect();
    for c in &sets {
        c.validate(ctx.engine.limits())?;
    }
    let mut created = 0;
    for c in sets {
        created += i64::from(run(ctx, session, c)?);
    }
    Ok(created)
}

pub fn hset(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, set_fields(ctx, session, args, "hset")?);
    DONE
}

pub fn hmset(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    set_fields(ctx, session, args, "hmset")?;
    encode::ok(out);
    DONE
}

fn field(
    ctx: &Context,
    session: &mut Session<'_>,
    key: &Bytes,
    field: &Bytes,
) -> Result<Option<Bytes>, Reject> {
    Ok(run(ctx, session, cmd::HashGet { key: key.clone(), field: field.clone() })?)
}

pub fn hget(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::opt_bulk(out, field(ctx, session, &args[1], &args[2])?.as_deref());
    DONE
}

pub fn hmget(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let values = args[2..].iter().map(|f| field(ctx, session, &args[1], f)).collect::<Result<Vec<_>, _>>()?;
    encode::array(out, values.len());
    for v in &values {
        encode::opt_bulk(out, v.as_deref());
    }
    DONE
}

pub fn hdel(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let mut n = 0;
    for f in &args[2..] {
        n += i64::from(run(ctx, session, cmd::HashDelete { key: args[1].clone(), field: f.clone() })?);
    }
    encode::int(out, n);
    DONE
}

fn all(ctx: &Context, session: &mut Session<'_>, key: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Reject> {
    Ok(run(ctx, session, cmd::HashGetAll { key: key.clone() })?)
}

pub fn hgetall(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, session, &args[1])?;
    encode::array(out, pairs.len() * 2);
    for (f, v) in &pairs {
        encode::bulk(out, f);
        encode::bulk(out, v);
    }
    DONE
}

pub fn hkeys(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, session, &args[1])?;
    encode::array(out, pairs.len());
    pairs.iter().for_each(|(f, _)| encode::bulk(out, f));
    DONE
}

pub fn hvals(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let pairs = all(ctx, session, &args[1])?;
    encode::array(out, pairs.len());
    pairs.iter().for_each(|(_, v)| encode::bulk(out, v));
    DONE
}

pub fn hexists(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, i64::from(field(ctx, session, &args[1], &args[2])?.is_some()));
    DONE
}

pub fn hlen(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::HashLen { key: args[1].clone() })?);
    DONE
}

pub fn hincrby(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let delta = int_arg(&args[3])?;
    encode::int(
        out,
        run(ctx, session, cmd::HashIncr { key: args[1].clone(), field: args[2].clone(), delta })?,
    );
    DONE
}

pub fn hsetnx(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let set = cmd::HashSetIfAbsent { key: args[1].clone(), field: args[2].clone(), value: args[3].clone() };
    encode::int(out, i64::from(run(ctx, session, set)?));
    DONE
}
