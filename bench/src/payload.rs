//! The load's messages: hand-encoded MLS PrivateMessages (RFC 9420 §6) with the group's
//! real id and epoch, whose opaque ciphertext carries a stamp the receiver reads back.
//!
//! The relay only checks the header (a PrivateMessage of content type application, for a
//! group and epoch it knows), so the bench measures the relay and not the client's
//! cryptography. The stamp says who sent the message, its number, when it was scheduled
//! and its message id, so latency and loss are measured end to end.

/// `ProtocolVersion::mls10`.
const VERSION_MLS10: u16 = 1;
/// `WireFormat::mls_private_message`.
const WIRE_FORMAT_PRIVATE_MESSAGE: u16 = 2;
/// `ContentType::application`.
const CONTENT_TYPE_APPLICATION: u8 = 1;
/// Size of a real `encrypted_sender_data` with AES-128-GCM: leaf index, generation and
/// reuse guard (12 bytes) plus the 16-byte tag.
const SENDER_DATA_BYTES: usize = 28;
/// Marks a bench stamp at the start of the ciphertext, so other deliveries (a Welcome, the
/// creator's conversation info) are recognised and skipped.
const MARKER: [u8; 4] = *b"RLBN";
/// Marker, sender, sequence, scheduled time and message id.
const STAMP_BYTES: usize = 4 + 4 + 8 + 8 + 16;

/// What the bench writes into each message's ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending device's index in the run.
    pub sender: u32,
    /// The message's number among that device's messages, from 0.
    pub seq: u64,
    /// When the message was due to be sent, in nanoseconds since the run's clock started.
    pub scheduled_ns: u64,
    /// The `SubmitMessage.message_id`, also kept here so duplicates can be recognised.
    pub message_id: [u8; 16],
}

/// The smallest `--size` that holds the header of a group with a `group_id_bytes` id and
/// the stamp.
pub fn size_min(group_id_bytes: usize) -> usize {
    header_bytes(group_id_bytes) + 1 + STAMP_BYTES
}

/// Encodes an MLSMessage of `size` bytes (see `ciphertext_len` for the two exceptions),
/// or of the minimum size if `size` is smaller.
pub fn encode(group_id: &[u8], epoch: u64, stamp: &Stamp, size: usize) -> Vec<u8> {
    let ciphertext_bytes = ciphertext_len(size.saturating_sub(header_bytes(group_id.len())));
    let mut out = Vec::with_capacity(size.max(size_min(group_id.len())));
    out.extend_from_slice(&VERSION_MLS10.to_be_bytes());
    out.extend_from_slice(&WIRE_FORMAT_PRIVATE_MESSAGE.to_be_bytes());
    put_vector(&mut out, group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(CONTENT_TYPE_APPLICATION);
    put_vector(&mut out, &[]);
    put_vector(&mut out, &[0xa5; SENDER_DATA_BYTES]);
    put_varint(&mut out, ciphertext_bytes);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&stamp.sender.to_be_bytes());
    out.extend_from_slice(&stamp.seq.to_be_bytes());
    out.extend_from_slice(&stamp.scheduled_ns.to_be_bytes());
    out.extend_from_slice(&stamp.message_id);
    // Filler that looks like ciphertext; nothing on the path compresses, so its content
    // does not matter, only its length.
    let filler = ciphertext_bytes - STAMP_BYTES;
    out.extend((0..filler).map(|i| (i as u8).wrapping_mul(151).wrapping_add(17)));
    out
}

/// Reads the stamp back from a delivered message; `None` for anything the bench did not
/// write (or a malformed message).
pub fn decode(bytes: &[u8]) -> Option<Stamp> {
    let mut reader = Reader(bytes);
    if reader.u16()? != VERSION_MLS10 || reader.u16()? != WIRE_FORMAT_PRIVATE_MESSAGE {
        return None;
    }
    reader.vector()?; // group_id
    reader.take(8)?; // epoch
    if reader.take(1)? != [CONTENT_TYPE_APPLICATION] {
        return None;
    }
    reader.vector()?; // authenticated_data
    reader.vector()?; // encrypted_sender_data
    let ciphertext = reader.vector()?;
    let mut stamp = Reader(ciphertext);
    if stamp.take(4)? != MARKER {
        return None;
    }
    Some(Stamp {
        sender: u32::from_be_bytes(stamp.take(4)?.try_into().ok()?),
        seq: u64::from_be_bytes(stamp.take(8)?.try_into().ok()?),
        scheduled_ns: u64::from_be_bytes(stamp.take(8)?.try_into().ok()?),
        message_id: stamp.take(16)?.try_into().ok()?,
    })
}

/// Everything before the ciphertext's length prefix.
fn header_bytes(group_id_bytes: usize) -> usize {
    2 + 2 + varint_len(group_id_bytes) + group_id_bytes + 8 + 1 + 1 + 1 + SENDER_DATA_BYTES
}

/// The ciphertext length whose vector (length prefix included) fills `room` bytes; where
/// no length fits exactly (just past a prefix boundary) the message comes out a byte or
/// two longer. Never less than the stamp.
fn ciphertext_len(room: usize) -> usize {
    let len = if room <= 0x40 {
        room.saturating_sub(1)
    } else if room <= 0x4000 + 1 {
        (room - 2).max(0x40)
    } else {
        (room - 4).max(0x4000)
    };
    len.max(STAMP_BYTES)
}

fn put_vector(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// RFC 9420 §2.1.2: the QUIC-style variable-length integer, minimal encoding only.
fn put_varint(out: &mut Vec<u8>, n: usize) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes());
    } else {
        // Lengths here are at most a few MB, far below the 2^30 limit of this form.
        out.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes());
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..0x40 => 1,
        0x40..0x4000 => 2,
        _ => 4,
    }
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn vector(&mut self) -> Option<&'a [u8]> {
        let first = *self.0.first()?;
        let len = match first >> 6 {
            0 => usize::from(self.take(1)?[0] & 0x3f),
            1 => usize::from(self.u16()? & 0x3fff),
            2 => (u32::from_be_bytes(self.take(4)?.try_into().ok()?) & 0x3fff_ffff) as usize,
            _ => return None,
        };
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{ContentType, MlsMessageIn, ProtocolMessage};

    fn stamp() -> Stamp {
        Stamp {
            sender: 7,
            seq: 123_456,
            scheduled_ns: 987_654_321,
            message_id: [9; 16],
        }
    }

    #[test]
    fn sizes_are_exact_and_stamps_round_trip() {
        let group_id = [3u8; 16];
        for size in (0..300).chain([1024, 16_383, 16_384, 16_390, 16_450, 100_000]) {
            let bytes = encode(&group_id, 5, &stamp(), size);
            let expected = size.max(size_min(group_id.len()));
            assert!(
                (expected..=expected + 2).contains(&bytes.len()),
                "size {size} gave {}",
                bytes.len()
            );
            if !(120..130).contains(&size) && !(16_440..16_450).contains(&size) {
                assert_eq!(bytes.len(), expected, "size {size}");
            }
            assert_eq!(decode(&bytes), Some(stamp()), "size {size}");
        }
    }

    #[test]
    fn varints_are_minimal() {
        let cases: [(usize, &[u8]); 6] = [
            (0, &[0x00]),
            (63, &[0x3f]),
            (64, &[0x40, 0x40]),
            (16_383, &[0x7f, 0xff]),
            (16_384, &[0x80, 0x00, 0x40, 0x00]),
            (1_000_000, &[0x80, 0x0f, 0x42, 0x40]),
        ];
        for (n, expected) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, expected, "{n}");
            assert_eq!(varint_len(n), expected.len(), "{n}");
        }
    }

    #[test]
    fn openmls_reads_it_as_an_application_private_message() {
        let group_id = [0x42u8; 16];
        let bytes = encode(&group_id, 3, &stamp(), 1024);
        let message = MlsMessageIn::tls_deserialize_exact(&bytes[..]).expect("valid MLSMessage");
        let Ok(ProtocolMessage::PrivateMessage(private)) = message.try_into_protocol_message()
        else {
            panic!("not a PrivateMessage");
        };
        assert_eq!(private.content_type(), ContentType::Application);
        assert_eq!(private.group_id().as_slice(), group_id);
        assert_eq!(private.epoch().as_u64(), 3);
    }

    #[test]
    fn foreign_and_truncated_messages_are_skipped() {
        let bytes = encode(&[1u8; 16], 1, &stamp(), 256);
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[2..4].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(decode(&other), None);
    }
}
