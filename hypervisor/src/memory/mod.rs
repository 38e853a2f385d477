//! Physical memory, the hypervisor's address space, its heap, and the
//! frames it gives guests.

pub mod frames;
pub mod guest_frames;
pub mod heap;
pub mod space;
