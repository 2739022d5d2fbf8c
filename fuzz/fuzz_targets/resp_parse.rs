//! Arbitrary bytes into the RESP2 decoder (arrays of bulk strings and inline commands), fed in
//! two pieces split at every byte the input's first byte chooses. Properties: no panic; limits
//! hold for every decoded command; splitting the input never changes what is decoded.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nanodb_server::frontend::resp::parse::RespDecoder;

const MAX_BULK: usize = 4096;
const MAX_ARGS: usize = 64;

fn decode_all(chunks: &[&[u8]]) -> (Vec<Vec<Bytes>>, bool) {
    let mut d = RespDecoder::new(MAX_BULK, MAX_ARGS);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut args = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode_into(&mut buf, &mut args) {
                Ok(true) => {
                    assert!(args.len() <= MAX_ARGS);
                    assert!(args.iter().all(|a| a.len() <= MAX_BULK.max(64 * 1024)));
                    out.push(std::mem::take(&mut args));
                }
                Ok(false) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = split as usize % (rest.len() + 1);
    let whole = decode_all(&[rest]);
    let pieces = decode_all(&[&rest[..at], &rest[at..]]);
    assert_eq!(whole, pieces, "split at {at} changed the result");
});
