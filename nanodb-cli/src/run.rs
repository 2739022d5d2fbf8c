//! Runs one [`Cmd`] over a [`Client`] and prints its result: the one path shared by one-shot
//! commands and the REPL.

use std::ffi::OsStr;
use std::io::{Read, Write};

use bytes::Bytes;
use nanodb_protocol::{Command, Expiry, ListEnd, PutCondition, Reply, Subscription, cmd};

use crate::args::{Cmd, Conn, ValueSource};
use crate::client::{Client, Failure};
use crate::output::{Out, Printer};
use crate::words::unescape;

/// The largest value read from a file or stdin: the protocol's default frame limit (the server
/// refuses anything larger anyway, and this keeps a mistaken `--value-file /dev/zero` bounded).
const MAX_VALUE_READ: u64 = nanodb_protocol::frame::DEFAULT_MAX_FRAME_LEN as u64;

/// An argument as bytes, its backslash escapes decoded (a bad escape is a usage error).
pub fn arg(a: &OsStr) -> Result<Bytes, Failure> {
    unescape(a).map_err(Failure::Usage)
}

fn value(v: &ValueSource) -> Result<Bytes, Failure> {
    let read = |r: &mut dyn Read, what: &str| -> Result<Bytes, Failure> {
        let mut buf = Vec::new();
        r.take(MAX_VALUE_READ + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Failure::Usage(format!("cannot read the value from {what}: {e}")))?;
        if buf.len() as u64 > MAX_VALUE_READ {
            return Err(Failure::Usage(format!(
                "the value from {what} is larger than {MAX_VALUE_READ} bytes"
            )));
        }
        Ok(Bytes::from(buf))
    };
    match (&v.value, &v.value_file) {
        (Some(s), None) if s == "-" => read(&mut std::io::stdin().lock(), "stdin"),
        (Some(s), None) => arg(s),
        (None, Some(path)) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| Failure::Usage(format!("--value-file {}: {e}", path.display())))?;
            read(&mut f, &path.display().to_string())
        }
        (None, None) => {
            Err(Failure::Usage("a value is needed: VALUE, `-` for stdin, or --value-file".into()))
        }
        (Some(_), Some(_)) => Err(Failure::Usage("give VALUE or --value-file, not both".into())),
    }
}

/// Translates a data command into the protocol's [`Command`]; `None` for the commands that are
/// not one request (watch, subscribe, scan, stats, monitor, del of several keys).
pub fn to_command(c: &Cmd) -> Result<Option<Command>, Failure> {
    Ok(Some(match c {
        Cmd::Get { key } => Command::Get(cmd::Get { key: arg(key)? }),
        Cmd::Put { key, value: v, ttl, if_absent, if_version } => Command::Put(cmd::Put {
            key: arg(key)?,
            value: value(v)?,
            expiry: ttl.map_or(Expiry::Persist, Expiry::In),
            condition: match (if_absent, if_version) {
                (true, _) => PutCondition::IfAbsent,
                (false, Some(v)) => PutCondition::IfVersion(*v),
                (false, None) => PutCondition::Always,
            },
        }),
        Cmd::Del { keys } if keys.len() == 1 => Command::Delete(cmd::Delete { key: arg(&keys[0])? }),
        Cmd::Incr { key, delta } => Command::Incr(cmd::Incr { key: arg(key)?, delta: *delta }),
        Cmd::Exists { key } => Command::Exists(cmd::Exists { key: arg(key)? }),
        Cmd::Ttl { key } => Command::Ttl(cmd::Ttl { key: arg(key)? }),
        Cmd::Expire { key, ttl, persist } => Command::Expire(cmd::Expire {
            key: arg(key)?,
            expiry: match (persist, ttl) {
                (true, _) => Expiry::Persist,
                (false, Some(ms)) => Expiry::In(*ms),
                (false, None) => return Err(Failure::Usage("expire needs a TTL or --persist".into())),
            },
        }),
        Cmd::Type { key } => Command::Type(cmd::Type { key: arg(key)? }),
        Cmd::Publish { channel, message } => {
            Command::Publish(cmd::Publish { channel: arg(channel)?, message: arg(message)? })
        }
        Cmd::Hset { key, field, value: v } => {
            Command::HashSet(cmd::HashSet { key: arg(key)?, field: arg(field)?, value: value(v)? })
        }
        Cmd::Hget { key, field } => Command::HashGet(cmd::HashGet { key: arg(key)?, field: arg(field)? }),
        Cmd::Hdel { key, field } => {
            Command::HashDelete(cmd::HashDelete { key: arg(key)?, field: arg(field)? })
        }
        Cmd::Hgetall { key } => Command::HashGetAll(cmd::HashGetAll { key: arg(key)? }),
        Cmd::Lpush { key, values } | Cmd::Rpush { key, values } => Command::ListPush(cmd::ListPush {
            key: arg(key)?,
            end: if matches!(c, Cmd::Lpush { .. }) { ListEnd::Front } else { ListEnd::Back },
            values: values.iter().map(|v| arg(v)).collect::<Result<_, _>>()?,
        }),
        Cmd::Lpop { key, count } | Cmd::Rpop { key, count } => Command::ListPop(cmd::ListPop {
            key: arg(key)?,
            end: if matches!(c, Cmd::Lpop { .. }) { ListEnd::Front } else { ListEnd::Back },
            count: *count,
        }),
        Cmd::Lrange { key, start, stop } => {
            Command::ListRange(cmd::ListRange { key: arg(key)?, start: *start, stop: *stop })
        }
        Cmd::Txn { compares, success, failure }
            if !(compares.is_empty() && success.is_empty() && failure.is_empty()) =>
        {
            crate::txn::from_parts(compares, success, failure)?
        }
        Cmd::Dbsize => Command::KeyCount(cmd::KeyCount {}),
        Cmd::Ping => Command::Ping(cmd::Ping {}),
        Cmd::Del { .. }
        | Cmd::Scan { .. }
        | Cmd::Watch { .. }
        | Cmd::Subscribe { .. }
        | Cmd::Txn { .. }
        | Cmd::Stats
        | Cmd::Monitor { .. } => {
            return Ok(None);
        }
    }))
}

/// Shapes a reply for printing.
pub fn shape(reply: Reply) -> Out {
    match reply {
        Reply::Pong => Out::Status("PONG".into()),
        Reply::Value(None) | Reply::Bytes(None) => Out::Nil,
        Reply::Value(Some(e)) => Out::Value(e.value),
        Reply::Bytes(Some(b)) => Out::Value(b),
        Reply::Put { applied, version } => Out::Put { applied, version },
        Reply::Bool(b) => Out::Int(i64::from(b)),
        Reply::Int(n) => Out::Int(n),
        Reply::List(vs) => Out::List(vs),
        Reply::Pairs(ps) => Out::Pairs(ps),
        Reply::Scan { entries, .. } => Out::Pairs(entries.into_iter().map(|e| (e.key, e.value)).collect()),
        Reply::Batch(rs) => Out::List(
            rs.into_iter()
                .map(|r| match r {
                    Ok(r) => Bytes::from(format!("{:?}", shape(r))),
                    Err(e) => Bytes::from(format!("(error) {} {e}", e.code().as_str())),
                })
                .collect(),
        ),
        Reply::Txn(t) => Out::Txn {
            succeeded: t.succeeded,
            results: t
                .results
                .into_iter()
                .map(|r| r.map(shape).map_err(|e| format!("{} {e}", e.code().as_str())))
                .collect(),
        },
        Reply::Script(v) => Out::Value(Bytes::from(format!("{v:?}"))),
    }
}

fn emit(out: &mut dyn Write, bytes: &[u8]) -> Result<(), Failure> {
    // A closed stdout (`| head`) ends the command quietly, as for any Unix tool.
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Failure::Connect(format!("stdout: {e}")))
}

/// Runs `c` and prints to `out`. `interrupt` ends a watch or subscribe (Ctrl-C).
pub async fn run(
    client: &mut Client,
    conn: &Conn,
    c: &Cmd,
    printer: Printer,
    out: &mut dyn Write,
    interrupt: impl Future<Output = ()>,
) -> Result<(), Failure> {
    if let Some(command) = to_command(c)? {
        let reply = client.call(command).await?;
        return emit(out, &printer.render(&shape(reply)));
    }
    match c {
        Cmd::Del { keys } => {
            let mut n = 0;
            for k in keys {
                if let Reply::Bool(true) = client.call(Command::Delete(cmd::Delete { key: arg(k)? })).await? {
                    n += 1;
                }
            }
            emit(out, &printer.render(&Out::Int(n)))
        }
        Cmd::Scan { prefix, page, keys_only } => {
            let prefix = arg(prefix)?;
            let mut cursor = Bytes::new();
            loop {
                let scan = cmd::Scan { prefix: prefix.clone(), limit: *page, cursor: cursor.clone() };
                let Reply::Scan { entries, next_cursor } = client.call(Command::Scan(scan)).await? else {
                    return Err(Failure::Connect("the server answered a scan with something else".into()));
                };
                let mut buf = Vec::new();
                for e in &entries {
                    buf.extend(printer.scan_entry(e, *keys_only));
                }
                emit(out, &buf)?;
                if next_cursor.is_empty() {
                    return Ok(());
                }
                cursor = next_cursor;
            }
        }
        Cmd::Watch { key, prefix } => {
            let (key, is_prefix) = match (key, prefix) {
                (_, Some(p)) => (arg(p)?, true),
                (Some(k), None) => (arg(k)?, false),
                (None, None) => return Err(Failure::Usage("watch needs KEY or --prefix P".into())),
            };
            let sub = Subscription::Watch { key, prefix: is_prefix, with_values: true };
            listen(client, vec![sub], printer, out, interrupt).await
        }
        Cmd::Subscribe { channels, pattern } => {
            let subs = channels
                .iter()
                .map(|c| {
                    arg(c).map(|ch| {
                        if *pattern {
                            Subscription::PSubscribe { pattern: ch }
                        } else {
                            Subscription::Subscribe { channel: ch }
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            listen(client, subs, printer, out, interrupt).await
        }
        Cmd::Stats => {
            let stats = crate::grpc::stats(conn).await?;
            emit(out, &printer.render(&Out::Json(crate::grpc::stats_json(&stats))))
        }
        Cmd::Txn { .. } => {
            // No flags: the parts come from stdin, as etcdctl's `txn` reads them.
            let txn = crate::txn::read_parts(&mut std::io::stdin().lock())?;
            let reply = client.call(txn).await?;
            emit(out, &printer.render(&shape(reply)))
        }
        Cmd::Monitor { .. } => {
            Err(Failure::Usage("run `nanodb-cli monitor` from the shell, not from the REPL".into()))
        }
        _ => Err(Failure::Usage("this command has no protocol request".into())),
    }
}

/// Subscribes, then prints pushes until `interrupt`; a LAGGED push resubscribes (the server
/// cancelled every subscription), as PROTOCOL.md 9.2 asks of a client.
async fn listen(
    client: &mut Client,
    subs: Vec<Subscription>,
    printer: Printer,
    out: &mut dyn Write,
    interrupt: impl Future<Output = ()>,
) -> Result<(), Failure> {
    for s in &subs {
        client.subscribe(s.clone()).await?;
    }
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            () = &mut interrupt => return Ok(()),
            push = client.next_push() => {
                let push = push?;
                emit(out, &printer.push(&push))?;
                if matches!(push, nanodb_protocol::Push::Lagged { .. }) {
                    for s in &subs {
                        client.subscribe(s.clone()).await?;
                    }
                }
            }
        }
    }
}
