//! The 24 VIRQ numbers of xen.h and their classes (spec §5, Xen 4.17's
//! `virq_is_global()`).

/// A virtual IRQ number, known to be below [`Virq::COUNT`].
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Virq(u8);

/// How a VIRQ is bound and delivered (spec §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VirqClass {
    /// Bound once per vcpu, on any vcpu, fixed to it; raised for one vcpu.
    PerVcpu,
    /// Bound once per domain on vcpu 0, movable with bind_vcpu; delivered
    /// only to the VIRQ's handler domain.
    Global,
    /// VIRQ_ARCH_0..7; global on x86.
    ArchGlobal,
    /// Numbers xen.h leaves unused (5, 14, 15); 4.17 treats them as global.
    UnusedGlobal,
}

impl VirqClass {
    /// Whether the class is per-vcpu (every other class binds like a global).
    pub const fn is_per_vcpu(self) -> bool {
        matches!(self, Self::PerVcpu)
    }
}

impl Virq {
    /// NR_VIRQS.
    pub const COUNT: usize = 24;
    /// VIRQ_TIMER (0), per-vcpu.
    pub const TIMER: Self = Self(0);
    /// VIRQ_DEBUG (1), per-vcpu.
    pub const DEBUG: Self = Self(1);
    /// VIRQ_CONSOLE (2), global.
    pub const CONSOLE: Self = Self(2);
    /// VIRQ_DOM_EXC (3), global.
    pub const DOM_EXC: Self = Self(3);
    /// VIRQ_TBUF (4), global.
    pub const TBUF: Self = Self(4);
    /// VIRQ_DEBUGGER (6), global.
    pub const DEBUGGER: Self = Self(6);
    /// VIRQ_XENOPROF (7), per-vcpu.
    pub const XENOPROF: Self = Self(7);
    /// VIRQ_CON_RING (8), global.
    pub const CON_RING: Self = Self(8);
    /// VIRQ_PCPU_STATE (9), global.
    pub const PCPU_STATE: Self = Self(9);
    /// VIRQ_MEM_EVENT (10), global.
    pub const MEM_EVENT: Self = Self(10);
    /// VIRQ_ARGO (11), global in 4.17 (per-domain from 4.21).
    pub const ARGO: Self = Self(11);
    /// VIRQ_ENOMEM (12), global.
    pub const ENOMEM: Self = Self(12);
    /// VIRQ_XENPMU (13), per-vcpu.
    pub const XENPMU: Self = Self(13);
    /// VIRQ_ARCH_0 (16) = VIRQ_MCA on x86, global.
    pub const ARCH_0: Self = Self(16);
    /// VIRQ_MCA (16), the x86 name of VIRQ_ARCH_0.
    pub const MCA: Self = Self(16);
    /// VIRQ_ARCH_7 (23), the last arch VIRQ.
    pub const ARCH_7: Self = Self(23);

    /// The VIRQ numbered `number`, if below [`Virq::COUNT`]. The op reads the
    /// guest's u32 as a signed int, so "negative" numbers are out of range too.
    pub const fn new(number: u32) -> Option<Self> {
        if (number as usize) < Self::COUNT {
            Some(Self(number as u8))
        } else {
            None
        }
    }

    /// The VIRQ number.
    pub const fn number(self) -> u32 {
        self.0 as u32
    }

    /// Index into a 24-entry per-VIRQ table.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// Every VIRQ, 0..24.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..Self::COUNT as u8).map(Self)
    }

    /// The VIRQ's class (spec §5 table; Xen 4.17 `virq_is_global()`).
    pub const fn class(self) -> VirqClass {
        match self.0 {
            0 | 1 | 7 | 13 => VirqClass::PerVcpu,
            5 | 14 | 15 => VirqClass::UnusedGlobal,
            16..=23 => VirqClass::ArchGlobal,
            _ => VirqClass::Global,
        }
    }

    /// Whether the VIRQ is bound and raised per vcpu.
    pub const fn is_per_vcpu(self) -> bool {
        self.class().is_per_vcpu()
    }
}

impl core::fmt::Display for Virq {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(formatter, "virq {}", self.0)
    }
}
