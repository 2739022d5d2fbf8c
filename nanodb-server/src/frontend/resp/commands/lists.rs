//! List commands: LPUSH, RPUSH, LPOP, RPOP (with count), LRANGE, LLEN, LINDEX, LSET, LTRIM.

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{ListEnd, cmd};

use super::{Flow, Outcome, Reject, Session, int_arg, run};
use crate::frontend::Context;
use crate::frontend::resp::encode;

const DONE: Outcome = Ok(Flow::Continue);

fn push(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    end: ListEnd,
    out: &mut BytesMut,
) -> Outcome {
    encode::int(
        out,
        run(ctx, session, cmd::ListPush { key: args[1].clone(), end, values: args[2..].to_vec() })?,
    );
    DONE
}

pub fn lpush(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    push(ctx, session, args, ListEnd::Front, out)
}

pub fn rpush(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    push(ctx, session, args, ListEnd::Back, out)
}

fn pop(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    end: ListEnd,
    out: &mut BytesMut,
) -> Outcome {
    let key = args[1].clone();
    match args.get(2) {
        None => {
            let v = run(ctx, session, cmd::ListPop { key, end, count: 1 })?;
            encode::opt_bulk(out, v.first().map(|b| &b[..]));
        }
        Some(c) if args.len() == 3 => {
            let n = int_arg(c)?;
            if n < 0 {
                return Err(Reject::Msg("ERR value is out of range, must be positive".into()));
            }
            let popped = if n == 0 {
                // The engine's 0 means 1; Redis's means none: read the length instead of popping.
                match run(ctx, session, cmd::ListLen { key })? {
                    0 => None,
                    _ => Some(Vec::new()),
                }
            } else {
                let count = u32::try_from(n).unwrap_or(u32::MAX);
                let v = run(ctx, session, cmd::ListPop { key, end, count })?;
                if v.is_empty() { None } else { Some(v) }
            };
            match popped {
                None => encode::null_array(out),
                Some(v) => {
                    encode::array(out, v.len());
                    v.iter().for_each(|b| encode::bulk(out, b));
                }
            }
        }
        Some(_) => return Err(Reject::Syntax),
    }
    DONE
}

pub fn lpop(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    pop(ctx, session, args, ListEnd::Front, out)
}

pub fn rpop(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    pop(ctx, session, args, ListEnd::Back, out)
}

pub fn lrange(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (start, stop) = (int_arg(&args[2])?, int_arg(&args[3])?);
    let v = run(ctx, session, cmd::ListRange { key: args[1].clone(), start, stop })?;
    encode::array(out, v.len());
    v.iter().for_each(|b| encode::bulk(out, b));
    DONE
}

pub fn llen(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    encode::int(out, run(ctx, session, cmd::ListLen { key: args[1].clone() })?);
    DONE
}

pub fn lindex(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let i = int_arg(&args[2])?;
    let v = run(ctx, session, cmd::ListRange { key: args[1].clone(), start: i, stop: i })?;
    encode::opt_bulk(out, v.first().map(|b| &b[..]));
    DONE
}

pub fn lset(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let index = int_arg(&args[2])?;
    run(ctx, session, cmd::ListSet { key: args[1].clone(), index, value: args[3].clone() })?;
    encode::ok(out);
    DONE
}

pub fn ltrim(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let (start, stop) = (int_arg(&args[2])?, int_arg(&args[3])?);
    run(ctx, session, cmd::ListTrim { key: args[1].clone(), start, stop })?;
    encode::ok(out);
    DONE
}
