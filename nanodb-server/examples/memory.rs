//! Bytes of resident memory per key for 1M keys of 16 B with 64 B values, written the way the
//! network delivers them (key and value sliced out of a larger read buffer), measured in-process.
//! `compare.sh memory` measures the same through the RESP port next to Redis; this one isolates the
//! engine. Run: `cargo run --release -p nanodb-server --example memory`.
use bytes::{BufMut, BytesMut};
use nanodb_protocol::cmd;
use nanodb_protocol::{Command, Expiry, Limits, PutCondition};
use nanodb_server::engine::{Engine, LogPosition};
use nanodb_server::stats::resident_memory_bytes;

#[global_allocator]
static GLOBAL: nanodb_server::allocator::Mimalloc = nanodb_server::allocator::Mimalloc;

fn main() {
    const KEYS: usize = 1_000_000;
    let engine = Engine::new(Limits::default());
    let before = resident_memory_bytes().unwrap_or(0);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    for i in 0..KEYS {
        // A "read buffer" holding the request: framing bytes, key, value.
        if buf.capacity() - buf.len() < 128 {
            buf = BytesMut::with_capacity(16 * 1024);
        }
        buf.put_slice(b"*3\r\n$3\r\nSET\r\n$16\r\n");
        let key = format!("k:{i:014}");
        buf.put_slice(key.as_bytes());
        buf.put_slice(b"\r\n$64\r\n");
        let value = format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15);
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
        let frame = buf.split().freeze();
        let key = frame.slice(19..35);
        let value = frame.slice(42..106);
        let put =
            Command::Put(cmd::Put { key, value, expiry: Expiry::Persist, condition: PutCondition::Always });
        engine.apply_command(put, &mut LogPosition::default()).expect("put");
    }
    let after = resident_memory_bytes().unwrap_or(0);
    println!(
        "keys={} RSS before={} after={} bytes/key={:.1}",
        engine.key_count(),
        before,
        after,
        (after - before) as f64 / KEYS as f64
    );
}
