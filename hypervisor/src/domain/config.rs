//! A boot module's command line: `<image path> dom=N vcpus=N mem=MiB priv
//! evtchn=2l cpus=0-1+3 ...`. The words Sluice understands choose the
//! domain's shape; the whole string after the image path becomes the
//! guest's `start_info.cmd_line`, as Xen passes a module string without its
//! file name.

use arrayvec::ArrayString;

/// Most vcpus a domain may have (its vcpu_info slots in shared_info).
pub const MAX_VCPUS: u32 = 32;
/// Default guest memory, MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// Guest memory bounds, MiB.
pub const MEMORY_MIB_RANGE: core::ops::RangeInclusive<u64> = 8..=1024;

/// What a module asks for.
#[derive(Clone, Debug)]
pub struct DomainArgs {
    /// `dom=N`: the domain id.
    pub domid: u16,
    /// `vcpus=N` (default 1).
    pub vcpus: u32,
    /// `mem=MiB` (default 32).
    pub memory_mib: u64,
    /// `priv`: the control domain.
    pub is_privileged: bool,
    /// `evtchn=2l` clears it: the domain stays on the 2-level ABI and
    /// EVTCHNOP_init_control answers -EOPNOTSUPP (`evtchn=fifo`, the
    /// default, lets it switch to FIFO).
    pub fifo: bool,
    /// `cpus=`: the pCPUs its vcpus may run on (`None`: every online one).
    pub cpus: Option<CpuSet>,
    /// The string after the image path, for start_info.cmd_line.
    pub guest_cmdline: ArrayString<256>,
    /// `build_fail=memory|stacks` (self-test builds only; other builds
    /// pass the word to the guest and ignore it): the build fails at that
    /// stage as if the allocator had run dry, whatever the free count.
    #[cfg(feature = "selftest")]
    pub build_fail: Option<BuildStage>,
    /// `spoil_tables` (self-test builds only): the domain's root table
    /// stops sharing the hypervisor's slots before a vcpu of it resumes
    /// (`selftest::spoiled_tables`).
    #[cfg(feature = "selftest")]
    pub is_spoiled_at_resume: bool,
}

/// Where an injected build failure strikes (`build_fail=`): after the
/// stage took part of what it needs, so that the failed build has
/// something of that stage to give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStage {
    /// `memory`: half way through the domain's memory frames.
    Memory,
    /// `stacks`: at the last vcpu's stack, every other stack (and all the
    /// memory and the shared_info frame) taken.
    Stacks,
}

/// A set of pCPUs by dense index (bit n = pCPU n), as `cpus=` writes it:
/// a list of indexes and inclusive ranges joined by `+`, `0-1+3` (a `,`
/// also separates, for loaders that allow it; QEMU's `-initrd` takes a
/// comma as the end of the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CpuSet(u64);

// Every pCPU index fits.
const _: () = assert!(arch::percpu::MAX_CPUS as u32 <= CpuSet::CAPACITY);

impl CpuSet {
    /// Largest set: every index a pCPU can have.
    pub const CAPACITY: u32 = u64::BITS;

    /// Parses `0-1+3` (or `0-1,3`): indexes below [`CpuSet::CAPACITY`],
    /// ranges `a-b` with a ≤ b; no empty items. `None` if malformed or
    /// empty.
    pub fn parse(text: &str) -> Option<Self> {
        let mut set = Self(0);
        for item in text.split(['+', ',']) {
            let (low, high) = match item.split_once('-') {
                Some((low, high)) => (low, high),
                None => (item, item),
            };
            let parse_index = |digits: &str| {
                digits
                    .bytes()
                    .all(|byte| byte.is_ascii_digit())
                    .then(|| digits.parse::<u32>().ok())
                    .flatten()
                    .filter(|&index| index < Self::CAPACITY)
            };
            let (low, high) = (parse_index(low)?, parse_index(high)?);
            if low > high {
                return None;
            }
            for index in low..=high {
                set.insert(index);
            }
        }
        (!set.is_empty()).then_some(set)
    }

    /// Adds pCPU `index` (ignored past the capacity).
    pub fn insert(&mut self, index: u32) {
        if index < Self::CAPACITY {
            self.0 |= 1 << index;
        }
    }

    /// Whether pCPU `index` is in it.
    pub fn contains(self, index: u32) -> bool {
        index < Self::CAPACITY && self.0 & (1 << index) != 0
    }

    /// Whether it is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many pCPUs it holds.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// The pCPUs in both.
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The pCPUs in `self` and not in `other`.
    pub fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Its pCPUs, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..Self::CAPACITY).filter(move |&index| self.contains(index))
    }

    /// Its `n`-th pCPU, lowest first.
    pub fn nth(self, n: u32) -> Option<u32> {
        self.iter().nth(n as usize)
    }
}

/// `0-1+3`, as `cpus=` takes it.
impl core::fmt::Display for CpuSet {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut separator = "";
        let mut index = 0;
        while index < Self::CAPACITY {
            if !self.contains(index) {
                index += 1;
                continue;
            }
            let mut last = index;
            while last + 1 < Self::CAPACITY && self.contains(last + 1) {
                last += 1;
            }
            if last == index {
                write!(formatter, "{separator}{index}")?;
            } else {
                write!(formatter, "{separator}{index}-{last}")?;
            }
            separator = "+";
            index = last + 1;
        }
        Ok(())
    }
}

/// Why a module line is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// `dom=` missing.
    NoDomain,
    /// A word Sluice reads has a bad value.
    BadValue(ArrayString<64>),
    /// `cpus=` is not a list of pCPU indexes and ranges.
    BadCpus(ArrayString<64>),
}

impl core::fmt::Display for ArgsError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDomain => formatter.write_str("no dom=N on the module line"),
            Self::BadValue(word) => write!(formatter, "bad value in `{word}`"),
            Self::BadCpus(word) => write!(
                formatter,
                "bad value in `{word}`: expected pCPU indexes and ranges below {}, e.g. cpus=0-1+3",
                CpuSet::CAPACITY
            ),
        }
    }
}

fn truncated(word: &str) -> ArrayString<64> {
    let mut text = ArrayString::new();
    for character in word.chars() {
        if text.try_push(character).is_err() {
            break;
        }
    }
    text
}

fn bad(word: &str) -> ArgsError {
    ArgsError::BadValue(truncated(word))
}

/// Parses a module string (file name first).
pub fn parse(module_string: &str) -> Result<DomainArgs, ArgsError> {
    let rest = module_string
        .trim_start()
        .split_once(' ')
        .map_or("", |(_, rest)| rest)
        .trim();
    let mut guest_cmdline = ArrayString::new();
    let _ = guest_cmdline.try_push_str(rest);
    let mut args = DomainArgs {
        domid: u16::MAX,
        vcpus: 1,
        memory_mib: DEFAULT_MEMORY_MIB,
        is_privileged: false,
        fifo: true,
        cpus: None,
        guest_cmdline,
        #[cfg(feature = "selftest")]
        build_fail: None,
        #[cfg(feature = "selftest")]
        is_spoiled_at_resume: false,
    };
    for word in rest.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("dom", value)) => {
                args.domid = value
                    .parse::<u16>()
                    .ok()
                    .filter(|&id| id < 0x7ff0)
                    .ok_or_else(|| bad(word))?;
            }
            Some(("vcpus", value)) => {
                args.vcpus = value
                    .parse::<u32>()
                    .ok()
                    .filter(|&count| (1..=MAX_VCPUS).contains(&count))
                    .ok_or_else(|| bad(word))?;
            }
            Some(("mem", value)) => {
                args.memory_mib = value
                    .parse::<u64>()
                    .ok()
                    .filter(|mib| MEMORY_MIB_RANGE.contains(mib))
                    .ok_or_else(|| bad(word))?;
            }
            Some(("evtchn", value)) => {
                args.fifo = match value {
                    "2l" => false,
                    "fifo" => true,
                    _ => return Err(bad(word)),
                };
            }
            Some(("cpus", value)) => {
                args.cpus =
                    Some(CpuSet::parse(value).ok_or_else(|| ArgsError::BadCpus(truncated(word)))?);
            }
            #[cfg(feature = "selftest")]
            Some(("build_fail", value)) => {
                args.build_fail = Some(match value {
                    "memory" => BuildStage::Memory,
                    "stacks" => BuildStage::Stacks,
                    _ => return Err(bad(word)),
                });
            }
            #[cfg(feature = "selftest")]
            None if word == "spoil_tables" => args.is_spoiled_at_resume = true,
            None if word == "priv" => args.is_privileged = true,
            _ => {}
        }
    }
    if args.domid == u16::MAX {
        return Err(ArgsError::NoDomain);
    }
    Ok(args)
}
