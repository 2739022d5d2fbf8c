//! RESP2 reply encoding into the connection's batch buffer: simple strings, errors, integers, bulk
//! strings, nulls and array headers. Integers are formatted without allocating.

use bytes::{BufMut, BytesMut};

/// `+<s>\r\n`.
pub fn simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

/// `+OK\r\n`.
pub fn ok(out: &mut BytesMut) {
    out.put_slice(b"+OK\r\n");
}

/// `-<msg>\r\n`; CR and LF inside the message become spaces so it stays one line.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.put_u8(b'-');
    out.extend(msg.bytes().map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }));
    out.put_slice(b"\r\n");
}

/// `:<n>\r\n`.
pub fn int(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    decimal(out, n);
    out.put_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut BytesMut, b: &[u8]) {
    out.reserve(b.len() + 16);
    out.put_u8(b'$');
    decimal(out, b.len() as i64);
    out.put_slice(b"\r\n");
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// `$-1\r\n`, the null bulk string.
pub fn null(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// `*-1\r\n`, the null array.
pub fn null_array(out: &mut BytesMut) {
    out.put_slice(b"*-1\r\n");
}

/// `*<n>\r\n`; the caller writes the n elements next.
pub fn array(out: &mut BytesMut, n: usize) {
    out.put_u8(b'*');
    decimal(out, n as i64);
    out.put_slice(b"\r\n");
}

/// A bulk string or null.
pub fn opt_bulk(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => bulk(out, b),
        None => null(out),
    }
}

/// Writes `n` in decimal.
pub fn decimal(out: &mut BytesMut, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut out = BytesMut::new();
        simple(&mut out, "PONG");
        error(&mut out, "ERR a\r\nb");
        int(&mut out, i64::MIN);
        int(&mut out, 0);
        bulk(&mut out, b"a\r\nb");
        null(&mut out);
        array(&mut out, 2);
        assert_eq!(
            &out[..],
            &b"+PONG\r\n-ERR a  b\r\n:-9223372036854775808\r\n:0\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n"[..]
        );
    }
}
