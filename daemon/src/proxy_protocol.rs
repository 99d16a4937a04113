//! The PROXY protocol, version 2 (HAProxy's `send-proxy-v2`): a TCP load balancer in
//! front of relaisd passes TLS through (channel binding needs it, D4), so relaisd sees
//! the balancer's address on every connection. A balancer listed in
//! `listen.proxy_protocol_from` starts each connection with this binary header naming the
//! client's address, which the connection limits, the failed-attempt limiter and the logs
//! then use. Only listed addresses may send it: anyone else could claim any address.
//!
//! The header is read with exact-length reads, so not a byte of the TLS handshake behind
//! it is consumed; a listed balancer's connection without a valid header is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The twelve bytes every version 2 header starts with.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// The fixed part: signature, version and command, family and transport, length.
const FIXED_BYTES: usize = 16;
/// The variable part at most: addresses (36 bytes for IPv6) and TLVs. Balancers send a
/// few dozen bytes; anything longer is not a header this relay wants to buffer.
const ADDRESSES_AND_TLVS_BYTES_MAX: usize = 512;
/// How long a listed balancer may take to send its header: it sends it at once, before
/// the client's first byte.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("the connection does not start with a PROXY protocol v2 header")]
    Signature,
    #[error("PROXY protocol version {0} is not supported (only 2)")]
    Version(u8),
    #[error("unknown PROXY protocol command {0}")]
    Command(u8),
    #[error("the PROXY protocol header announces {0} bytes, more than the 512 accepted")]
    TooLong(usize),
    #[error("the PROXY protocol header is shorter than its addresses")]
    Truncated,
    #[error("the balancer sent no PROXY protocol header in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// What the header says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's connection, from this address.
    Client(SocketAddr),
    /// The balancer's own connection (a health check, `LOCAL`), or one whose addresses are
    /// not TCP over IP: the balancer's address stands.
    Balancer,
}

/// Parses the fixed part; returns how many bytes of addresses and TLVs follow.
fn fixed(header: &[u8; FIXED_BYTES]) -> Result<usize, ProxyError> {
    if header[..12] != SIGNATURE {
        return Err(ProxyError::Signature);
    }
    let version = header[12] >> 4;
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > ADDRESSES_AND_TLVS_BYTES_MAX {
        return Err(ProxyError::TooLong(length));
    }
    Ok(length)
}

/// Parses a whole header: its fixed part and the `rest` it announced.
pub fn parse(header: &[u8; FIXED_BYTES], rest: &[u8]) -> Result<Origin, ProxyError> {
    fixed(header)?;
    match header[12] & 0x0F {
        0 => return Ok(Origin::Balancer),
        1 => {}
        command => return Err(ProxyError::Command(command)),
    }
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    match header[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            if rest.len() < 12 {
                return Err(ProxyError::Truncated);
            }
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Origin::Client(SocketAddr::new(IpAddr::V4(ip), port(8))))
        }
        // TCP over IPv6.
        0x21 => {
            if rest.len() < 36 {
                return Err(ProxyError::Truncated);
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&rest[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Origin::Client(SocketAddr::new(IpAddr::V6(ip), port(32))))
        }
        // UNSPEC, UDP or Unix sockets: nothing this relay can use as a client address.
        _ => Ok(Origin::Balancer),
    }
}

/// Reads a header from `stream`, exactly, within [`HEADER_TIMEOUT`]; returns the client's
/// address, or `balancer` where the header names none.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    balancer: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    let read = async {
        let mut header = [0u8; FIXED_BYTES];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| ProxyError::Io(e.to_string()))?;
        let mut rest = vec![0u8; fixed(&header)?];
        stream
            .read_exact(&mut rest)
            .await
            .map_err(|e| ProxyError::Io(e.to_string()))?;
        parse(&header, &rest)
    };
    match tokio::time::timeout(HEADER_TIMEOUT, read).await {
        Ok(Ok(Origin::Client(client))) => Ok(client),
        Ok(Ok(Origin::Balancer)) => Ok(balancer),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyError::Timeout),
    }
}

/// A version 2 header for a client at `source` reaching `destination`: what a balancer
/// sends (and what tests send as one).
pub fn header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8]) -> ([u8; FIXED_BYTES], Vec<u8>) {
        let mut fixed = [0u8; FIXED_BYTES];
        fixed.copy_from_slice(&bytes[..FIXED_BYTES]);
        (fixed, bytes[FIXED_BYTES..].to_vec())
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn headers_name_the_client() {
        let destination = addr("192.0.2.1:8443");
        for source in ["203.0.113.7:51000", "[2001:db8::7]:51000"] {
            let (fixed, rest) = split(&header(addr(source), destination));
            assert_eq!(parse(&fixed, &rest), Ok(Origin::Client(addr(source))));
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = header(addr("203.0.113.7:51000"), addr("192.0.2.1:8443"));
        let with = |at: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[at] = byte;
            bytes
        };
        let local = with(12, 0x20);
        let unspec = with(13, 0x00);
        let cases: [(&str, Vec<u8>, Result<Origin, ProxyError>); 6] = [
            ("signature", with(0, b'G'), Err(ProxyError::Signature)),
            ("version 1", with(12, 0x11), Err(ProxyError::Version(1))),
            ("command", with(12, 0x2F), Err(ProxyError::Command(15))),
            ("LOCAL", local, Ok(Origin::Balancer)),
            ("UNSPEC", unspec, Ok(Origin::Balancer)),
            (
                "truncated",
                good[..FIXED_BYTES + 8].to_vec(),
                Err(ProxyError::Truncated),
            ),
        ];
        for (name, bytes, want) in cases {
            let (fixed, rest) = split(&bytes);
            assert_eq!(parse(&fixed, &rest), want, "{name}");
        }
        let mut long = good.clone();
        long[14..16].copy_from_slice(&600u16.to_be_bytes());
        let (fixed, _) = split(&long);
        assert_eq!(super::fixed(&fixed), Err(ProxyError::TooLong(600)));
    }

    #[tokio::test]
    async fn reading_takes_the_header_and_nothing_more() {
        let mut bytes = header(addr("203.0.113.7:51000"), addr("192.0.2.1:8443"));
        bytes.extend_from_slice(b"\x16\x03\x01 the TLS ClientHello");
        let mut stream = &bytes[..];
        let client = read(&mut stream, addr("127.0.0.1:1")).await;
        assert_eq!(client, Ok(addr("203.0.113.7:51000")));
        assert_eq!(stream, b"\x16\x03\x01 the TLS ClientHello");
        let mut garbage = &b"GET / HTTP/1.1\r\n\r\n"[..];
        assert_eq!(
            read(&mut garbage, addr("127.0.0.1:1")).await,
            Err(ProxyError::Signature)
        );
    }
}
