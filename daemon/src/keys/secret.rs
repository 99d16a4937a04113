//! Memory for the server's secrets: each lives in a heap page of its own, locked into RAM
//! with `mlock` so it is never written to swap, and zeroed when dropped.
//!
//! Copies the libraries make (rustls's parsed key, openmls's signer) are outside these
//! pages; D8 covers them by making the process non-dumpable and running without swap.

use std::io::Read;
use std::ops::Deref;
use std::sync::Once;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// The largest secret relaisd reads: a PEM private key of up to RSA 4096 bits fits, and
/// the whole buffer stays within one locked page.
pub const SECRET_BYTES_MAX: usize = 4096 - std::mem::size_of::<usize>();

/// Aligned to a page (4 KiB on the appliance's x86_64), so a secret never shares its page
/// with other data and locking it locks nothing else.
#[repr(C, align(4096))]
struct Page<T>(T);

/// A value in a locked page of its own; it zeroes itself on drop (the bound says so).
///
/// The lock is not released on drop: the value's own `Drop` zeroes it after ours runs, and
/// unlocking first would let the page be swapped out with the secret still in it. The
/// zeroed page goes back to the allocator still locked, which costs one page per secret.
pub struct Locked<T: ZeroizeOnDrop>(Box<Page<T>>);

impl<T: ZeroizeOnDrop> Locked<T> {
    /// Moves `value` into a locked page. The moved-from copy is wherever the caller built
    /// it (typically the stack, overwritten soon after); large secrets should be filled in
    /// place instead, as [`Secret::read_from`] does.
    pub fn new(value: T) -> Locked<T> {
        let page = Box::new(Page(value));
        lock(
            std::ptr::from_ref(&*page).cast(),
            std::mem::size_of::<Page<T>>(),
        );
        Locked(page)
    }
}

impl<T: ZeroizeOnDrop> Deref for Locked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.0
    }
}

/// Bytes of a secret of variable length (a PEM key, a 32-byte seed), read in place.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes {
    len: usize,
    bytes: [u8; SECRET_BYTES_MAX],
}

/// A secret read from a file or a pipe, locked and zeroed on drop.
pub type Secret = Locked<SecretBytes>;

impl Secret {
    /// Reads all of `reader` into a new locked page; `Ok(None)` when it holds more than
    /// `max` bytes (at most [`SECRET_BYTES_MAX`]), so the caller can say what it expected.
    pub fn read_from(reader: &mut impl Read, max: usize) -> std::io::Result<Option<Secret>> {
        let max = max.min(SECRET_BYTES_MAX);
        let mut page = Box::new(Page(SecretBytes {
            len: 0,
            bytes: [0; SECRET_BYTES_MAX],
        }));
        lock(
            std::ptr::from_ref(&*page).cast(),
            std::mem::size_of::<Page<SecretBytes>>(),
        );
        let secret = &mut page.0;
        // One byte of room past `max` tells "exactly max" from "too long".
        let end = if max < SECRET_BYTES_MAX { max + 1 } else { max };
        while secret.len < end {
            match reader.read(&mut secret.bytes[secret.len..end]) {
                Ok(0) => break,
                Ok(n) => secret.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if secret.len > max || (secret.len == SECRET_BYTES_MAX && has_more(reader)?) {
            return Ok(None);
        }
        Ok(Some(Locked(page)))
    }

    /// Copies `bytes` into a new locked page (for secrets generated in memory).
    pub fn copy_of(bytes: &[u8]) -> Option<Secret> {
        Secret::read_from(&mut &bytes[..], bytes.len())
            .ok()
            .flatten()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0.0.bytes[..self.0.0.len]
    }
}

/// Whether a reader that filled the whole buffer still has data.
fn has_more(reader: &mut impl Read) -> std::io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Locks `len` bytes at `address` into RAM. A failure (a low `RLIMIT_MEMLOCK`, a seccomp
/// filter without `mlock`) is logged once and otherwise tolerated: the appliance runs
/// without swap (D8), so the lock is a second line of defence, not the only one.
fn lock(address: *const std::ffi::c_void, len: usize) {
    static WARNED: Once = Once::new();
    let Some(address) = std::ptr::NonNull::new(address.cast_mut()) else {
        return;
    };
    // SAFETY: `address..address + len` is one live heap allocation owned by the caller
    // (a `Box<Page<T>>` of exactly `len` bytes); mlock only changes whether its pages may
    // be swapped, never their contents or ownership.
    #[allow(unsafe_code)]
    let locked = unsafe { nix::sys::mman::mlock(address, len) };
    if let Err(e) = locked {
        WARNED.call_once(|| {
            tracing::warn!(
                error = %e,
                "cannot lock secrets in memory; raise LimitMEMLOCK or run without swap (D8)"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_whole_and_bounded() {
        let secret = Secret::read_from(&mut &[7u8; 32][..], 32)
            .expect("read")
            .expect("fits");
        assert_eq!(secret.as_bytes(), &[7u8; 32]);
        assert!(
            Secret::read_from(&mut &[7u8; 33][..], 32)
                .expect("read")
                .is_none()
        );
        let page = vec![1u8; SECRET_BYTES_MAX];
        assert_eq!(
            Secret::copy_of(&page).expect("a full page fits").as_bytes(),
            &page[..]
        );
        let too_long = vec![1u8; SECRET_BYTES_MAX + 1];
        assert!(
            Secret::read_from(&mut &too_long[..], usize::MAX)
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn a_locked_secret_sits_alone_in_its_page() {
        let secret = Secret::copy_of(b"seed").expect("fits");
        let address = secret.as_bytes().as_ptr() as usize;
        assert_eq!(address % 4096, std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<Page<SecretBytes>>(), 4096);
        // The kernel reports locked memory of this process in VmLck.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let locked_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmLck");
        assert!(locked_kib >= 4, "{locked_kib} KiB locked");
    }
}
