//! Redis's conversions between command replies and Lua values, both ways.
//!
//! `redis.call` runs the RESP frontend's own handler for the command (so a command behaves in a
//! script exactly as it does on the wire) and turns its RESP reply into Lua: an integer into a
//! number, a bulk string into a string, a null into `false`, a status into `{ok = ...}`, an error
//! into `{err = ...}`, an array into a table. A script's return value goes the other way
//! ([`lua_to_value`]).

use bytes::Bytes;
use mlua::{Lua, Value};
use nanodb_protocol::ScriptValue;
use nanodb_protocol::script::MAX_SCRIPT_REPLY_DEPTH;

/// Converts one whole RESP2 reply (as the RESP handlers write it) into a Lua value.
pub(crate) fn resp_to_lua(lua: &Lua, resp: &[u8]) -> mlua::Result<Value> {
    let mut at = 0;
    let value = parse(lua, resp, &mut at, 0)?;
    Ok(value)
}

fn malformed() -> mlua::Error {
    mlua::Error::RuntimeError("internal error: a command's reply could not be read".into())
}

fn line<'a>(resp: &'a [u8], at: &mut usize) -> mlua::Result<&'a [u8]> {
    let rest = resp.get(*at..).ok_or_else(malformed)?;
    let end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(malformed)?;
    *at += end + 2;
    Ok(&rest[..end])
}

fn int(b: &[u8]) -> mlua::Result<i64> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or_else(malformed)
}

fn parse(lua: &Lua, resp: &[u8], at: &mut usize, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_SCRIPT_REPLY_DEPTH {
        return Err(malformed());
    }
    let tag = *resp.get(*at).ok_or_else(malformed)?;
    *at += 1;
    let head = line(resp, at)?;
    Ok(match tag {
        b'+' | b'-' => {
            let t = lua.create_table()?;
            t.raw_set(if tag == b'+' { "ok" } else { "err" }, lua.create_string(head)?)?;
            Value::Table(t)
        }
        b':' => Value::Number(int(head)? as f64),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Value::Boolean(false));
            }
            let n = n as usize;
            let body = resp.get(*at..*at + n).ok_or_else(malformed)?;
            *at += n + 2;
            Value::String(lua.create_string(body)?)
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Value::Boolean(false));
            }
            let t = lua.create_table()?;
            for i in 1..=n {
                t.raw_set(i, parse(lua, resp, at, depth + 1)?)?;
            }
            Value::Table(t)
        }
        _ => return Err(malformed()),
    })
}

/// A script's Lua value as Redis converts it (see [`ScriptValue`]); an error when the value nests
/// deeper than a reply may.
pub(crate) fn lua_to_value(value: &Value, depth: usize) -> Result<ScriptValue, String> {
    if depth > MAX_SCRIPT_REPLY_DEPTH {
        return Err("ERR reply nests too deep".into());
    }
    Ok(match value {
        Value::Nil | Value::Boolean(false) => ScriptValue::Nil,
        Value::Boolean(true) => ScriptValue::Int(1),
        Value::Integer(n) => ScriptValue::Int(*n),
        // Redis truncates; `as` saturates out-of-range numbers and maps NaN to 0.
        Value::Number(n) => ScriptValue::Int(*n as i64),
        Value::String(s) => ScriptValue::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Ok(ScriptValue::Error(String::from_utf8_lossy(&e.as_bytes()).into_owned()));
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                return Ok(ScriptValue::Status(String::from_utf8_lossy(&s.as_bytes()).into_owned()));
            }
            let mut items = Vec::new();
            for i in 1.. {
                let item: Value = t.raw_get(i).map_err(|e| format!("ERR {e}"))?;
                if item.is_nil() {
                    break;
                }
                items.push(lua_to_value(&item, depth + 1)?);
            }
            ScriptValue::Array(items)
        }
        _ => ScriptValue::Nil,
    })
}
