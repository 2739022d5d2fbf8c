//! Arbitrary bytes as a log segment or snapshot body: the record reader must never panic, never
//! allocate past its record limit, and stop at the first record that is not whole and valid.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nanodb_server::persist::record::{Read, read_at, valid_record_after};

const MAX_RECORD: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let mut offset = 0;
    loop {
        match read_at(&data, offset, MAX_RECORD) {
            // A group record is one record too: its effects are applied whole or not at all.
            Read::Record(_, next) | Read::Group(_, next) => {
                assert!(next > offset && next <= data.len());
                offset = next;
            }
            Read::End => break,
            Read::Incomplete(_) | Read::Invalid(_) => {
                let _ = valid_record_after(&data, offset, MAX_RECORD);
                break;
            }
        }
    }
});
