//! A minimal NTP server (RFC 5905, server mode only) for the appliance's boot test: it
//! answers every client request with this host's clock as a stratum-1 source, so that a
//! machine under QEMU's user network (which reaches the host's loopback as 10.0.2.2) can
//! synchronize from it.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from NTP's epoch (1900) to Unix's (1970).
const NTP_TO_UNIX_S: u64 = 2_208_988_800;
const PACKET_BYTES: usize = 48;

/// Answers NTP requests on 127.0.0.1:123 until dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds port 123 (root only) on the loopback address.
    pub fn start() -> Server {
        let socket = UdpSocket::bind("127.0.0.1:123").expect("bind 127.0.0.1:123 for NTP");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let (stop, answered) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let thread = std::thread::spawn({
            let (stop, answered) = (stop.clone(), answered.clone());
            move || {
                let mut request = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, peer)) = socket.recv_from(&mut request) else {
                        continue;
                    };
                    // A client's request: mode 3 in the low three bits.
                    if len >= PACKET_BYTES && request[0] & 0b111 == 3 {
                        let answer = answer(&request[..PACKET_BYTES]);
                        if socket.send_to(&answer, peer).is_ok() {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        Server {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server's answer: no leap warning, the client's version, mode 4 (server), stratum 1
/// with reference "LOCL", and the client's transmit time returned as the origin time.
fn answer(request: &[u8]) -> [u8; PACKET_BYTES] {
    let now = timestamp();
    let mut answer = [0u8; PACKET_BYTES];
    answer[0] = (request[0] & 0b0011_1000) | 4;
    answer[1] = 1;
    answer[2] = request[2];
    answer[3] = (-20i8) as u8; // precision: about a microsecond
    answer[12..16].copy_from_slice(b"LOCL");
    answer[16..24].copy_from_slice(&now);
    answer[24..32].copy_from_slice(&request[40..48]);
    answer[32..40].copy_from_slice(&now);
    answer[40..48].copy_from_slice(&now);
    answer
}

/// This host's clock as an NTP timestamp: seconds since 1900 and a binary fraction.
fn timestamp() -> [u8; 8] {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    let seconds = (since_unix.as_secs() + NTP_TO_UNIX_S) as u32;
    let fraction = ((u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut stamp = [0u8; 8];
    stamp[..4].copy_from_slice(&seconds.to_be_bytes());
    stamp[4..].copy_from_slice(&fraction.to_be_bytes());
    stamp
}
