//! Xen's errno values as seen by a guest (spec §0; public/errno.h).
//!
//! Hypercalls return `-errno` in `rax`; [`Errno::result`] turns such a value
//! into a `Result`, so tests can write `check_eq!(op(), Err(Errno::EINVAL))`.

use core::fmt;

/// A positive Xen errno number.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(1);
    /// No such file or directory (Xen: no such vcpu).
    pub const ENOENT: Errno = Errno(2);
    /// No such process (Xen: no such domain).
    pub const ESRCH: Errno = Errno(3);
    /// No such device or address.
    pub const ENXIO: Errno = Errno(6);
    /// Argument list too long.
    pub const E2BIG: Errno = Errno(7);
    /// Try again.
    pub const EAGAIN: Errno = Errno(11);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Permission denied.
    pub const EACCES: Errno = Errno(13);
    /// Bad address.
    pub const EFAULT: Errno = Errno(14);
    /// Device or resource busy.
    pub const EBUSY: Errno = Errno(16);
    /// Already exists.
    pub const EEXIST: Errno = Errno(17);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// No space left.
    pub const ENOSPC: Errno = Errno(28);
    /// Function not implemented.
    pub const ENOSYS: Errno = Errno(38);
    /// Timer expired.
    pub const ETIME: Errno = Errno(62);
    /// Operation not supported.
    pub const EOPNOTSUPP: Errno = Errno(95);

    /// Splits a raw hypercall return value: negative is an error, the rest is
    /// the value.
    pub fn result(rc: i64) -> Result<i64, Errno> {
        if rc < 0 { Err(Errno(-rc)) } else { Ok(rc) }
    }

    /// Like [`Errno::result`] for hypercalls whose only success value is 0.
    pub fn unit(rc: i64) -> Result<(), Errno> {
        Errno::result(rc).map(|_| ())
    }

    /// Xen's name for this errno, if it is one the runtime knows.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            6 => "ENXIO",
            7 => "E2BIG",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            38 => "ENOSYS",
            62 => "ETIME",
            95 => "EOPNOTSUPP",
            _ => return None,
        })
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}
