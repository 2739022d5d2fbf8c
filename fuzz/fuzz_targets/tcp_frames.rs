//! Arbitrary bytes into the server's and the client's TCP codecs: framing, every body layout and
//! batch nesting. Properties: no panic; nothing reserved beyond the frame limit; a decoded request
//! re-encodes to a frame the decoder reads back identically.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nanodb_protocol::wire::{self, Request};
use nanodb_protocol::{ClientCodec, ServerCodec};
use tokio_util::codec::Decoder;

const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut server = ServerCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some((id, request))) = server.decode(&mut buf) {
        assert!(buf.capacity() <= data.len().max(MAX_FRAME + 4) * 2, "reserved past the limit");
        if let Ok(request) = request {
            if let Request::Command(cmd) = &request {
                let _ = cmd.validate(&nanodb_protocol::Limits::default());
            }
            let mut again = BytesMut::new();
            wire::encode_request(id, &request, &mut again).expect("a decoded request has a wire form");
            let (id2, back) = ServerCodec::new(usize::MAX >> 1)
                .decode(&mut again)
                .expect("own encoding decodes")
                .expect("whole frame");
            assert_eq!((id2, back), (id, Ok(request)));
        }
    }
    let mut client = ClientCodec::new(MAX_FRAME);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = client.decode(&mut buf) {}
});
