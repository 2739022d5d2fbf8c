//! Bytes on the command line and on the screen: backslash escapes in (so any key or value can be
//! typed), quoted escapes out (so binary values print safely), and the REPL's word splitting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;

/// Decodes `\xNN`, `\n`, `\r`, `\t`, `\0`, `\\`, `\"`, `\'` and `\ ` in an argument; any other
/// backslash is an error, so a typo does not silently become a different key.
pub fn unescape(arg: &OsStr) -> Result<Bytes, String> {
    let b = arg.as_bytes();
    if !b.contains(&b'\\') {
        return Ok(Bytes::copy_from_slice(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(&c) = b.get(i + 1) else { return Err("a trailing backslash escapes nothing".into()) };
        i += 2;
        out.push(match c {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'0' => 0,
            b'\\' | b'"' | b'\'' | b' ' => c,
            b'x' => {
                let hex = b.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                    return Err("\\x needs two hex digits (\\x00 to \\xff)".into());
                };
                i += 2;
                v
            }
            other => return Err(format!("unknown escape \\{} (use \\\\ for a backslash)", other as char)),
        });
    }
    Ok(Bytes::from(out))
}

/// Quotes bytes for people, as redis-cli does: `"text"`, with `\n`, `\"`, `\\` and `\xNN` for
/// anything not printable ASCII.
pub fn quote(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// Splits a REPL line into words: blanks separate, `"..."` and `'...'` group (quotes removed),
/// backslash escapes are kept for [`unescape`] (so `\"` and `\ ` do not end a word).
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                cur.push('\\');
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err("a trailing backslash escapes nothing".into()),
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unbalanced {q}"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let raw = b"a\x00\xff\"\\ \n";
        let quoted = quote(raw);
        assert_eq!(quoted, r#""a\x00\xff\"\\ \n""#);
        let inner = &quoted[1..quoted.len() - 1];
        assert_eq!(unescape(OsStr::new(inner)).expect("unescape"), Bytes::from_static(raw));
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert!(unescape(OsStr::new("a\\")).expect_err("an error").contains("trailing"));
        assert!(unescape(OsStr::new("\\xg1")).expect_err("an error").contains("hex"));
        assert!(unescape(OsStr::new("\\q")).expect_err("an error").contains("unknown escape"));
        // Non-UTF-8 bytes pass through untouched.
        let raw = OsStr::from_bytes(b"\xff\xfe");
        assert_eq!(unescape(raw).expect("raw bytes"), Bytes::from_static(b"\xff\xfe"));
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split(r#"put "a b" 'c d' e\ f"#).expect("split"), ["put", "a b", "c d", "e\\ f"]);
        assert_eq!(split(r#"put k "say \"hi\"""#).expect("split"), ["put", "k", "say \\\"hi\\\""]);
        assert_eq!(split(r#"put k """#).expect("split"), ["put", "k", ""]);
        assert!(split(r#"put "k"#).expect_err("an error").contains("unbalanced"));
        assert!(split("   ").expect("blank").is_empty());
    }
}
