//! Xen's event-channel subsystem, portable and `no_std`.
#![no_std]
#![forbid(unsafe_code)]
