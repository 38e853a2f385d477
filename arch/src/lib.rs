//! Everything x86_64-specific and privileged in Sluice.
#![no_std]
