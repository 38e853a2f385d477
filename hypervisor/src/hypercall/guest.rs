//! Guest addresses as typed handles (STYLE §4): a hypercall argument that
//! names guest memory becomes a [`GuestIn`] (the hypervisor only reads it,
//! Xen's const handle), a [`GuestOut`] (only writes) or a [`GuestInOut`],
//! and the type says which copies are possible. Every copy goes through
//! `arch::guest_copy`; a bad address gives -EFAULT.

use evtchn_core::Errno;

#[inline]
fn read(address: u64, out: &mut [u8]) -> Result<(), Errno> {
    arch::guest_copy::copy_from_guest(out, address).map_err(|_| Errno::EFAULT)
}

#[inline]
fn read_u32(address: u64) -> Result<u32, Errno> {
    arch::guest_copy::read_u32_from_guest(address).map_err(|_| Errno::EFAULT)
}

#[inline]
fn write(address: u64, bytes: &[u8]) -> Result<(), Errno> {
    arch::guest_copy::copy_to_guest(address, bytes).map_err(|_| Errno::EFAULT)
}

/// Guest memory the hypervisor reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestIn(pub u64);

impl GuestIn {
    /// Copies `out.len()` bytes in.
    #[inline]
    pub fn read(self, out: &mut [u8]) -> Result<(), Errno> {
        read(self.0, out)
    }

    /// Reads nine little-endian quadwords (as [`Self::read`] of 72 bytes;
    /// HYPERVISOR_iret's frame: nine guarded loads into registers,
    /// `arch::guest_copy::read_nine_words_from_guest`).
    #[inline]
    pub fn read_nine_words(self) -> Result<[u64; 9], Errno> {
        arch::guest_copy::read_nine_words_from_guest(self.0).map_err(|_| Errno::EFAULT)
    }

    /// The handle `offset` bytes further on.
    #[inline]
    pub fn offset(self, offset: u64) -> Self {
        Self(self.0.wrapping_add(offset))
    }
}

/// Guest memory the hypervisor writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestOut(pub u64);

impl GuestOut {
    /// Copies `bytes` out.
    #[inline]
    pub fn write(self, bytes: &[u8]) -> Result<(), Errno> {
        write(self.0, bytes)
    }
}

/// Guest memory the hypervisor reads and writes back (an op struct with
/// OUT fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestInOut(pub u64);

impl GuestInOut {
    /// Copies `out.len()` bytes in.
    #[inline]
    pub fn read(self, out: &mut [u8]) -> Result<(), Errno> {
        read(self.0, out)
    }

    /// Reads the little-endian `u32` at the start (as [`Self::read`] of
    /// four bytes, in one load).
    #[inline]
    pub fn read_u32(self) -> Result<u32, Errno> {
        read_u32(self.0)
    }

    /// Reads `N` little-endian quadwords (as [`Self::read`] of `N * 8`
    /// bytes, without first zeroing a buffer the copy overwrites).
    #[inline]
    pub fn read_words<const N: usize>(self) -> Result<[u64; N], Errno> {
        arch::guest_copy::read_words_from_guest(self.0).map_err(|_| Errno::EFAULT)
    }

    /// Copies `bytes` out.
    #[inline]
    pub fn write(self, bytes: &[u8]) -> Result<(), Errno> {
        write(self.0, bytes)
    }

    /// Copies `N` quadwords out, little-endian (as [`Self::write`] of
    /// their bytes).
    #[inline]
    pub fn write_words<const N: usize>(self, words: [u64; N]) -> Result<(), Errno> {
        let mut bytes = [[0u8; 8]; N];
        for (target, word) in bytes.iter_mut().zip(words) {
            *target = word.to_le_bytes();
        }
        write(self.0, bytes.as_flattened())
    }
}
