//! How replies are printed: for people (`human`, `table`) quoted and escaped as redis-cli does,
//! for scripts (`raw`) the bytes as they are, or as JSON (binary values as `{"base64": ...}`).

use std::io::Write;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::args::Format;
use crate::words::quote;

/// A reply, shaped for printing.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Nothing there.
    Nil,
    /// A status word (`PONG`, `OK`).
    Status(String),
    /// An integer.
    Int(i64),
    /// A string value.
    Value(Bytes),
    /// A list.
    List(Vec<Bytes>),
    /// A hash's fields and values.
    Pairs(Vec<(Bytes, Bytes)>),
    /// A write's outcome.
    Put {
        /// Whether the condition held.
        applied: bool,
        /// The version now.
        version: u64,
    },
    /// A document (stats).
    Json(Value),
    /// A transaction's outcome: which branch ran, and each of its commands' result or error
    /// (`CODE message`).
    Txn {
        /// True when every compare held and the success commands ran.
        succeeded: bool,
        /// One per command of the branch that ran, in order.
        results: Vec<Result<Out, String>>,
    },
}

/// Bytes as JSON: a string when UTF-8, else `{"base64": ...}`.
pub fn json_bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.into()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// Writes replies in one format.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// The format.
    pub format: Format,
}

impl Printer {
    /// Renders `out` (with a final newline).
    pub fn render(&self, out: &Out) -> Vec<u8> {
        let mut w = Vec::new();
        match self.format {
            Format::Json => {
                let v = to_json(out);
                let _ = writeln!(w, "{v}");
            }
            Format::Raw => match out {
                Out::Nil => w.push(b'\n'),
                Out::Status(s) => {
                    let _ = writeln!(w, "{s}");
                }
                Out::Int(n) => {
                    let _ = writeln!(w, "{n}");
                }
                Out::Value(v) => {
                    w.extend_from_slice(v);
                    w.push(b'\n');
                }
                Out::List(vs) => vs.iter().for_each(|v| {
                    w.extend_from_slice(v);
                    w.push(b'\n');
                }),
                Out::Pairs(ps) => ps.iter().for_each(|(k, v)| {
                    w.extend_from_slice(k);
                    w.push(b'\n');
                    w.extend_from_slice(v);
                    w.push(b'\n');
                }),
                Out::Put { applied, version } => {
                    let _ = writeln!(w, "{} {version}", if *applied { "OK" } else { "NOT_APPLIED" });
                }
                Out::Json(v) => {
                    let _ = writeln!(w, "{v}");
                }
                Out::Txn { succeeded, results } => w.extend(self.txn(*succeeded, results)),
            },
            Format::Human | Format::Table => match out {
                Out::Nil => w.extend_from_slice(b"(nil)\n"),
                Out::Status(s) => {
                    let _ = writeln!(w, "{s}");
                }
                Out::Int(n) => {
                    let _ = writeln!(w, "(integer) {n}");
                }
                Out::Value(v) => {
                    let _ = writeln!(w, "{}", quote(v));
                }
                Out::List(vs) if vs.is_empty() => w.extend_from_slice(b"(empty list)\n"),
                Out::List(vs) => {
                    for (i, v) in vs.iter().enumerate() {
                        let _ = writeln!(w, "{}) {}", i + 1, quote(v));
                    }
                }
                Out::Pairs(ps) if ps.is_empty() => w.extend_from_slice(b"(empty hash)\n"),
                Out::Pairs(ps) if self.format == Format::Table => {
                    let rows: Vec<_> = ps.iter().map(|(k, v)| (quote(k), quote(v))).collect();
                    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).max(5);
                    let _ = writeln!(w, "{:<width$}  VALUE", "FIELD");
                    for (k, v) in rows {
                        let _ = writeln!(w, "{k:<width$}  {v}");
                    }
                }
                Out::Pairs(ps) => {
                    for (i, (k, v)) in ps.iter().enumerate() {
                        let _ = writeln!(w, "{}) {}\n{}) {}", 2 * i + 1, quote(k), 2 * i + 2, quote(v));
                    }
                }
                Out::Put { applied: true, version } => {
                    let _ = writeln!(w, "OK (version {version})");
                }
                Out::Put { applied: false, version } => {
                    let _ = writeln!(w, "(not applied: condition failed; version now {version})");
                }
                Out::Json(v) => {
                    let _ = writeln!(w, "{}", serde_json::to_string_pretty(v).unwrap_or_default());
                }
                Out::Txn { succeeded, results } => w.extend(self.txn(*succeeded, results)),
            },
        }
        w
    }

    /// A transaction as etcdctl prints one: the branch that ran, then each result as it would
    /// print alone (numbered for people).
    fn txn(&self, succeeded: bool, results: &[Result<Out, String>]) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(if succeeded { b"SUCCEEDED\n" } else { b"FAILED\n" });
        for (i, r) in results.iter().enumerate() {
            if self.format != Format::Raw {
                let _ = write!(w, "{}) ", i + 1);
            }
            match r {
                Ok(o) => w.extend(self.render(o)),
                Err(e) => {
                    let _ = writeln!(w, "(error) {e}");
                }
            }
        }
        w
    }

    /// Prints one scan entry as it arrives.
    pub fn scan_entry(&self, e: &nanodb_protocol::ScanEntry, keys_only: bool) -> Vec<u8> {
        let mut w = Vec::new();
        match (self.format, keys_only) {
            (Format::Json, _) => {
                let mut v = json!({ "key": json_bytes(&e.key) });
                if !keys_only {
                    v["value"] = json_bytes(&e.value);
                    v["version"] = json!(e.version);
                    v["ttl_ms"] = json!(e.ttl_ms);
                }
                let _ = writeln!(w, "{v}");
            }
            (Format::Raw, true) => {
                w.extend_from_slice(&e.key);
                w.push(b'\n');
            }
            (Format::Raw, false) => {
                w.extend_from_slice(&e.key);
                w.push(b'\n');
                w.extend_from_slice(&e.value);
                w.push(b'\n');
            }
            (_, true) => {
                let _ = writeln!(w, "{}", quote(&e.key));
            }
            (Format::Table, false) => {
                let _ = writeln!(
                    w,
                    "{:<32}  {:<32}  {:>8}  {:>8}",
                    quote(&e.key),
                    quote(&e.value),
                    e.version,
                    e.ttl_ms
                );
            }
            (_, false) => {
                let _ = writeln!(w, "{} => {}", quote(&e.key), quote(&e.value));
            }
        }
        w
    }

    /// Prints one push (a key event, a message, a lagged notice).
    pub fn push(&self, p: &nanodb_protocol::Push) -> Vec<u8> {
        use nanodb_protocol::Push;
        let mut w = Vec::new();
        let json = self.format == Format::Json;
        match p {
            Push::Event { kind, op, key, version, value } => {
                let kind = match kind {
                    nanodb_protocol::EventType::Put => "put",
                    nanodb_protocol::EventType::Delete => "delete",
                    nanodb_protocol::EventType::Expire => "expire",
                };
                if json {
                    let mut v = json!({"type": kind, "op": op, "key": json_bytes(key), "version": version});
                    if let Some(val) = value {
                        v["value"] = json_bytes(val);
                    }
                    let _ = writeln!(w, "{v}");
                } else if self.format == Format::Raw {
                    let _ = write!(w, "{kind}\t{op}\t{version}\t");
                    w.extend_from_slice(key);
                    if let Some(val) = value {
                        w.push(b'\t');
                        w.extend_from_slice(val);
                    }
                    w.push(b'\n');
                } else {
                    let val = value.as_ref().map(|v| format!(" {}", quote(v))).unwrap_or_default();
                    let _ = writeln!(w, "{kind} {op} {} (version {version}){val}", quote(key));
                }
            }
            Push::Message { channel, payload, pattern } => {
                if json {
                    let mut v = json!({"channel": json_bytes(channel), "message": json_bytes(payload)});
                    if let Some(p) = pattern {
                        v["pattern"] = json_bytes(p);
                    }
                    let _ = writeln!(w, "{v}");
                } else if self.format == Format::Raw {
                    w.extend_from_slice(channel);
                    w.push(b'\t');
                    w.extend_from_slice(payload);
                    w.push(b'\n');
                } else {
                    let _ = writeln!(w, "{} {}", quote(channel), quote(payload));
                }
            }
            Push::Lagged { dropped } => {
                let _ = writeln!(
                    w,
                    "(lagged) {dropped} changes were dropped because this client fell behind; resubscribing"
                );
            }
        }
        w
    }
}

fn to_json(out: &Out) -> Value {
    match out {
        Out::Nil => Value::Null,
        Out::Status(s) => json!(s),
        Out::Int(n) => json!(n),
        Out::Value(v) => json_bytes(v),
        Out::List(vs) => Value::Array(vs.iter().map(|v| json_bytes(v)).collect()),
        Out::Pairs(ps) => Value::Array(
            ps.iter().map(|(k, v)| json!({"field": json_bytes(k), "value": json_bytes(v)})).collect(),
        ),
        Out::Put { applied, version } => json!({"applied": applied, "version": version}),
        Out::Json(v) => v.clone(),
        Out::Txn { succeeded, results } => json!({
            "succeeded": succeeded,
            "results": results
                .iter()
                .map(|r| match r {
                    Ok(o) => to_json(o),
                    Err(e) => json!({ "error": e }),
                })
                .collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(format: Format, out: Out) -> String {
        String::from_utf8_lossy(&Printer { format }.render(&out)).into_owned()
    }

    #[test]
    fn human_output_is_quoted_and_typed() {
        assert_eq!(show(Format::Human, Out::Nil), "(nil)\n");
        assert_eq!(show(Format::Human, Out::Int(7)), "(integer) 7\n");
        assert_eq!(show(Format::Human, Out::Value(Bytes::from_static(b"a\xff\n"))), "\"a\\xff\\n\"\n");
        assert_eq!(
            show(Format::Human, Out::List(vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")])),
            "1) \"x\"\n2) \"y\"\n"
        );
    }

    #[test]
    fn raw_output_is_the_bytes() {
        let out = Printer { format: Format::Raw }.render(&Out::Value(Bytes::from_static(b"a\xff")));
        assert_eq!(out, b"a\xff\n");
        assert_eq!(show(Format::Raw, Out::Nil), "\n");
        assert_eq!(show(Format::Raw, Out::Int(-3)), "-3\n");
    }

    #[test]
    fn json_output_keeps_binary() {
        assert_eq!(show(Format::Json, Out::Value(Bytes::from_static(b"\xff"))), "{\"base64\":\"/w==\"}\n");
        assert_eq!(show(Format::Json, Out::Value(Bytes::from_static(b"hi"))), "\"hi\"\n");
        assert_eq!(
            show(Format::Json, Out::Put { applied: false, version: 3 }),
            "{\"applied\":false,\"version\":3}\n"
        );
    }

    #[test]
    fn a_transaction_prints_its_branch_then_each_result() {
        let out = Out::Txn {
            succeeded: false,
            results: vec![Ok(Out::Value(Bytes::from_static(b"90"))), Err("WRONGTYPE not a list".into())],
        };
        assert_eq!(show(Format::Human, out.clone()), "FAILED\n1) \"90\"\n2) (error) WRONGTYPE not a list\n");
        assert_eq!(show(Format::Raw, out.clone()), "FAILED\n90\n(error) WRONGTYPE not a list\n");
        assert_eq!(
            show(Format::Json, out),
            "{\"results\":[\"90\",{\"error\":\"WRONGTYPE not a list\"}],\"succeeded\":false}\n"
        );
    }

    #[test]
    fn table_aligns_fields() {
        let out = show(
            Format::Table,
            Out::Pairs(vec![
                (Bytes::from_static(b"a"), Bytes::from_static(b"1")),
                (Bytes::from_static(b"long-field"), Bytes::from_static(b"2")),
            ]),
        );
        assert_eq!(out, "FIELD         VALUE\n\"a\"           \"1\"\n\"long-field\"  \"2\"\n");
    }
}
