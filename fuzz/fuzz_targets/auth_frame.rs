//! Arbitrary bytes as the body of a binary-protocol AUTH frame (and the frame around it).
//! Properties: no panic; a body that decodes is an AUTH whose re-encoding decodes to the same
//! request; nothing else decodes from the AUTH kind.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nanodb_protocol::ServerCodec;
use nanodb_protocol::wire::{self, Request, kind};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    match wire::decode_request(kind::AUTH, Bytes::copy_from_slice(data)) {
        Ok(request) => {
            assert!(matches!(request, Request::Auth { .. }), "{request:?}");
            let mut again = BytesMut::new();
            wire::encode_request(7, &request, &mut again).expect("AUTH has a wire form");
            let decoded = ServerCodec::new(usize::MAX >> 1).decode(&mut again).expect("decodes").expect("whole");
            assert_eq!(decoded, (7, Ok(request)));
        }
        Err(e) => assert!(matches!(e, nanodb_protocol::Error::Malformed(_)), "{e:?}"),
    }
});
