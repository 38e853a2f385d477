//! The guests' x87/SSE state: a per-vcpu FXSAVE area and the two
//! instructions that move it between memory and the registers.
//!
//! Sluice itself is built soft-float (`x86_64-unknown-none`): the compiler
//! never emits x87, MMX or SSE instructions for it, so while the
//! hypervisor runs, the FPU/SSE registers hold whatever the guest on this
//! pCPU left there. The only hypervisor code that touches them is
//! [`FxArea::save`] and [`FxArea::restore`] below, called by the scheduler
//! when a pCPU switches from one vcpu to another (and [`mxcsr_mask`],
//! whose `fxsave64` only reads them). Nothing else in Sluice
//! may use these registers (no `fninit`, no SSE `memcpy`): doing so would
//! corrupt the running guest's state.

/// The reset value of the x87 control word (`FCW`): every exception
/// masked, 64-bit precision, round to nearest (what `fninit` sets).
pub const RESET_FCW: u16 = 0x037f;
/// The reset value of `MXCSR`: every SIMD exception masked, round to
/// nearest, no flush-to-zero.
pub const RESET_MXCSR: u32 = 0x1f80;

/// Byte offset of `FCW` in the FXSAVE layout.
const FCW_OFFSET: usize = 0;
/// Byte offset of `MXCSR` in the FXSAVE layout.
const MXCSR_OFFSET: usize = 24;
/// Byte offset of `MXCSR_MASK` (the MXCSR bits this CPU implements) in
/// the FXSAVE layout.
const MXCSR_MASK_OFFSET: usize = 28;
/// The `MXCSR_MASK` of CPUs that store 0 there (the architectural default:
/// every bit but DAZ, bit 6, in the low 16).
const DEFAULT_MXCSR_MASK: u32 = 0xffbf;

/// One vcpu's x87/SSE registers in the 64-bit FXSAVE layout (512 bytes,
/// 16-byte aligned as `fxsave64`/`fxrstor64` require).
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FxArea([u8; 512]);

impl FxArea {
    /// The architectural reset state: `FCW` 0x37f, `MXCSR` 0x1f80, every
    /// other field (status and tag words, the x87 stack, xmm0-xmm15) zero
    /// (an abridged tag word of 0 means every x87 register is empty).
    pub const fn reset() -> Self {
        let mut bytes = [0u8; 512];
        let fcw = RESET_FCW.to_le_bytes();
        bytes[FCW_OFFSET] = fcw[0];
        bytes[FCW_OFFSET + 1] = fcw[1];
        let mxcsr = RESET_MXCSR.to_le_bytes();
        bytes[MXCSR_OFFSET] = mxcsr[0];
        bytes[MXCSR_OFFSET + 1] = mxcsr[1];
        bytes[MXCSR_OFFSET + 2] = mxcsr[2];
        bytes[MXCSR_OFFSET + 3] = mxcsr[3];
        Self(bytes)
    }

    /// The state a guest gave for a vcpu (VCPUOP_initialise with
    /// VGCF_i387_valid: a 64-bit FXSAVE image), made safe to load on CPUs
    /// whose `MXCSR_MASK` is `mxcsr_mask` ([`mxcsr_mask`]).
    ///
    /// An image whose `MXCSR` sets a bit outside the mask is one
    /// `fxrstor64` refuses (#GP). Xen 4.17 copies the image as given and
    /// meets that fault when it first loads it: on a CPU with XSAVE (which
    /// Xen then loads state with), XRSTOR's fault recovery puts the x87
    /// and SSE registers in their initial state and keeps only the
    /// implemented bits of the given `MXCSR`. Sluice does the same here,
    /// once: such an image becomes [`FxArea::reset`] with `MXCSR` = the
    /// given value & `mxcsr_mask`. (Xen's FXRSTOR path, on CPUs without
    /// XSAVE, zeroes the whole image instead, `FCW` and `MXCSR` too.) Any
    /// other image is taken byte for byte (`fxrstor64` cannot fault on
    /// the other fields, and ignores the reserved bytes).
    pub fn from_guest(image: &[u8; 512], mxcsr_mask: u32) -> Self {
        let area = Self(*image);
        let mxcsr = area.mxcsr();
        if mxcsr & !mxcsr_mask == 0 {
            return area;
        }
        let mut area = Self::reset();
        area.0[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&(mxcsr & mxcsr_mask).to_le_bytes());
        area
    }

    /// Copies this CPU's x87/SSE registers into the area (`fxsave64`).
    /// The registers are left as they were.
    #[inline]
    pub fn save(&mut self) {
        // SAFETY: `self.0` is 512 writable bytes, 16-byte aligned (the
        // type's alignment), exactly what fxsave64 writes; CR4.OSFXSR is
        // set on every CPU (`cpu::enable_protections`) and CR0.EM/TS are
        // clear, so the instruction neither faults nor touches anything
        // else (it changes no register and no flag).
        unsafe {
            core::arch::asm!(
                "fxsave64 [{area}]",
                area = in(reg) self.0.as_mut_ptr(),
                options(nostack, preserves_flags),
            );
        }
    }

    /// Loads this CPU's x87/SSE registers from the area (`fxrstor64`).
    #[inline]
    pub fn restore(&self) {
        // SAFETY: `self.0` is 512 readable bytes, 16-byte aligned. Its
        // contents are `reset()`, what `save` wrote, or a guest's image
        // that `from_guest` checked against this CPU's MXCSR_MASK (all
        // CPUs of a machine have the same one, and the guest never writes
        // the area afterwards), so no reserved MXCSR bit is set and
        // fxrstor64 cannot #GP (the only fault a 64-bit FXSAVE image can
        // cause once it is aligned). It only
        // changes the x87/SSE registers, which Sluice does not use
        // (module doc).
        unsafe {
            core::arch::asm!(
                "fxrstor64 [{area}]",
                area = in(reg) self.0.as_ptr(),
                options(nostack, preserves_flags, readonly),
            );
        }
    }

    /// The saved x87 control word.
    pub fn fcw(&self) -> u16 {
        u16::from_le_bytes([self.0[FCW_OFFSET], self.0[FCW_OFFSET + 1]])
    }

    /// The saved `MXCSR`.
    pub fn mxcsr(&self) -> u32 {
        u32::from_le_bytes([
            self.0[MXCSR_OFFSET],
            self.0[MXCSR_OFFSET + 1],
            self.0[MXCSR_OFFSET + 2],
            self.0[MXCSR_OFFSET + 3],
        ])
    }
}

/// This CPU's `MXCSR_MASK`: the `MXCSR` bits `fxrstor64` and `ldmxcsr`
/// accept (from an `fxsave64`, which only reads the registers; 0 there
/// means the architectural default, 0xffbf).
pub fn mxcsr_mask() -> u32 {
    let mut probe = FxArea::reset();
    probe.save();
    let mask = u32::from_le_bytes([
        probe.0[MXCSR_MASK_OFFSET],
        probe.0[MXCSR_MASK_OFFSET + 1],
        probe.0[MXCSR_MASK_OFFSET + 2],
        probe.0[MXCSR_MASK_OFFSET + 3],
    ]);
    if mask == 0 { DEFAULT_MXCSR_MASK } else { mask }
}

impl Default for FxArea {
    fn default() -> Self {
        Self::reset()
    }
}

impl core::fmt::Debug for FxArea {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FxArea")
            .field("fcw", &self.fcw())
            .field("mxcsr", &self.mxcsr())
            .finish_non_exhaustive()
    }
}
