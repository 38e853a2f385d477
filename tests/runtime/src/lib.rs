//! The PV guest runtime for Sluice's scenario guests.
#![no_std]
