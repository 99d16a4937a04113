//! Fuzzes the frame decoder: any bytes a peer sends must be refused or decoded, never
//! panic, and whatever decodes must survive re-encoding and decoding unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The frame limit the fuzzer decodes under: large enough for every input it makes.
const FRAME_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = relais_protocol::decode_envelope(data, FRAME_BYTES_MAX) else {
        return;
    };
    // The canonical encoding may be a few bytes longer than a non-canonical input (an
    // unpacked single repeated value, for example), so it is decoded under its own size.
    let encoded = envelope.encode_to_vec();
    let decoded = relais_protocol::decode_envelope(&encoded, encoded.len())
        .expect("a re-encoded envelope must decode");
    assert_eq!(
        decoded, envelope,
        "decode(encode(envelope)) changed the envelope"
    );
    assert_eq!(
        decoded.encode_to_vec(),
        encoded,
        "the encoding of a decoded envelope must be stable"
    );
});
