//! A boot module's command line: `<image path> dom=N vcpus=N mem=MiB priv
//! evtchn=2l ...`. The words Sluice understands choose the domain's shape; the whole
//! string after the image path becomes the guest's `start_info.cmd_line`,
//! as Xen passes a module string without its file name.

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
    /// The string after the image path, for start_info.cmd_line.
    pub guest_cmdline: ArrayString<256>,
}

/// Why a module line is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// `dom=` missing.
    NoDomain,
    /// A word Sluice reads has a bad value.
    BadValue(ArrayString<64>),
}

impl core::fmt::Display for ArgsError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoDomain => formatter.write_str("no dom=N on the module line"),
            Self::BadValue(word) => write!(formatter, "bad value in `{word}`"),
        }
    }
}

fn bad(word: &str) -> ArgsError {
    let mut text = ArrayString::new();
    for character in word.chars() {
        if text.try_push(character).is_err() {
            break;
        }
    }
    ArgsError::BadValue(text)
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
        guest_cmdline,
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
            None if word == "priv" => args.is_privileged = true,
            _ => {}
        }
    }
    if args.domid == u16::MAX {
        return Err(ArgsError::NoDomain);
    }
    Ok(args)
}
