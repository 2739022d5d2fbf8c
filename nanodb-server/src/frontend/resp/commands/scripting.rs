//! Script commands: EVAL, EVALSHA and SCRIPT LOAD|EXISTS|FLUSH|KILL (see `crate::scripting`).

use bytes::{Bytes, BytesMut};
use nanodb_protocol::{ScriptSource, ScriptValue, cmd};

use super::{Flow, Outcome, Reject, Session, int_arg, is, run};
use crate::auth::Need;
use crate::frontend::Context;
use crate::frontend::resp::encode;
use crate::scripting::Killed;

const DONE: Outcome = Ok(Flow::Continue);

/// `EVAL script numkeys key... arg...` (and EVALSHA, with `source` the SHA-1).
fn eval_with(
    ctx: &Context,
    session: &mut Session<'_>,
    args: &[Bytes],
    out: &mut BytesMut,
    source: fn(Bytes) -> ScriptSource,
) -> Outcome {
    let numkeys = int_arg(&args[2])?;
    let rest = &args[3..];
    if numkeys < 0 {
        return Err(Reject::Msg("ERR Number of keys can't be negative".into()));
    }
    if numkeys as u64 > rest.len() as u64 {
        return Err(Reject::Msg("ERR Number of keys can't be greater than number of args".into()));
    }
    let (keys, argv) = rest.split_at(numkeys as usize);
    let eval = cmd::Eval { script: source(args[1].clone()), keys: keys.to_vec(), args: argv.to_vec() };
    write_value(out, &run(ctx, session, eval)?);
    DONE
}

pub fn eval(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    eval_with(ctx, session, args, out, ScriptSource::Text)
}

pub fn evalsha(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    eval_with(ctx, session, args, out, ScriptSource::Sha)
}

/// A script's value in RESP, as Redis writes it.
fn write_value(out: &mut BytesMut, value: &ScriptValue) {
    match value {
        ScriptValue::Nil => encode::null(out),
        ScriptValue::Int(n) => encode::int(out, *n),
        ScriptValue::Bulk(b) => encode::bulk(out, b),
        ScriptValue::Status(s) => encode::simple(out, &s.replace(['\r', '\n'], " ")),
        ScriptValue::Error(e) => encode::error(out, &e.replace(['\r', '\n'], " ")),
        ScriptValue::Array(items) => {
            encode::array(out, items.len());
            items.iter().for_each(|v| write_value(out, v));
        }
    }
}

pub fn script(ctx: &Context, session: &mut Session<'_>, args: &[Bytes], out: &mut BytesMut) -> Outcome {
    let sub = &args[1];
    let scripts = &ctx.scripts;
    if is(sub, "LOAD") && args.len() == 3 {
        let max = ctx.engine.limits().max_value_len;
        if args[2].len() > max {
            return Err(Reject::Engine(nanodb_protocol::Error::ValueTooLarge { len: args[2].len(), max }));
        }
        let sha = scripts.load(args[2].clone())?;
        encode::bulk(out, sha.as_bytes());
    } else if is(sub, "EXISTS") && args.len() >= 3 {
        encode::array(out, args.len() - 2);
        for sha in &args[2..] {
            encode::int(out, i64::from(scripts.exists(sha)));
        }
    } else if is(sub, "FLUSH") && args.len() <= 3 {
        ctx.authorize(&session.caller, Need::Admin("script|flush"))?;
        if let Some(mode) = args.get(2)
            && !is(mode, "SYNC")
            && !is(mode, "ASYNC")
        {
            return Err(Reject::Msg("ERR SCRIPT FLUSH only support SYNC|ASYNC option".into()));
        }
        scripts.flush();
        encode::ok(out);
    } else if is(sub, "KILL") && args.len() == 2 {
        ctx.authorize(&session.caller, Need::Admin("script|kill"))?;
        match scripts.kill() {
            Killed::Some(_) => encode::ok(out),
            Killed::NotBusy => encode::error(out, "NOTBUSY No scripts in execution right now."),
        }
    } else {
        return Err(Reject::Msg(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try SCRIPT HELP.",
            String::from_utf8_lossy(sub)
        )));
    }
    DONE
}
