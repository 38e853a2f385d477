//! Physical memory, the hypervisor's address space and its heap.

pub mod frames;
pub mod heap;
pub mod space;
