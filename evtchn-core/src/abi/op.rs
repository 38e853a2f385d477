//! EVTCHNOP numbers and EVTCHNSTAT values (event_channel.h, spec §1.1, §1.3).

/// An `HYPERVISOR_event_channel_op` command (the `cmd` in `rdi`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvtchnOp {
    /// EVTCHNOP_bind_interdomain (0).
    BindInterdomain = 0,
    /// EVTCHNOP_bind_virq (1).
    BindVirq = 1,
    /// EVTCHNOP_bind_pirq (2).
    BindPirq = 2,
    /// EVTCHNOP_close (3).
    Close = 3,
    /// EVTCHNOP_send (4).
    Send = 4,
    /// EVTCHNOP_status (5).
    Status = 5,
    /// EVTCHNOP_alloc_unbound (6).
    AllocUnbound = 6,
    /// EVTCHNOP_bind_ipi (7).
    BindIpi = 7,
    /// EVTCHNOP_bind_vcpu (8).
    BindVcpu = 8,
    /// EVTCHNOP_unmask (9).
    Unmask = 9,
    /// EVTCHNOP_reset (10).
    Reset = 10,
    /// EVTCHNOP_init_control (11).
    InitControl = 11,
    /// EVTCHNOP_expand_array (12).
    ExpandArray = 12,
    /// EVTCHNOP_set_priority (13).
    SetPriority = 13,
    /// EVTCHNOP_reset_cont (14): hidden from guests' headers, used by the
    /// continuation of a preempted reset, accepted from any guest.
    ResetCont = 14,
}

impl EvtchnOp {
    /// Every op, in command-number order.
    pub const ALL: [Self; 15] = [
        Self::BindInterdomain,
        Self::BindVirq,
        Self::BindPirq,
        Self::Close,
        Self::Send,
        Self::Status,
        Self::AllocUnbound,
        Self::BindIpi,
        Self::BindVcpu,
        Self::Unmask,
        Self::Reset,
        Self::InitControl,
        Self::ExpandArray,
        Self::SetPriority,
        Self::ResetCont,
    ];

    /// The op with command number `cmd`; `None` means -ENOSYS.
    pub const fn from_cmd(cmd: u32) -> Option<Self> {
        Some(match cmd {
            0 => Self::BindInterdomain,
            1 => Self::BindVirq,
            2 => Self::BindPirq,
            3 => Self::Close,
            4 => Self::Send,
            5 => Self::Status,
            6 => Self::AllocUnbound,
            7 => Self::BindIpi,
            8 => Self::BindVcpu,
            9 => Self::Unmask,
            10 => Self::Reset,
            11 => Self::InitControl,
            12 => Self::ExpandArray,
            13 => Self::SetPriority,
            14 => Self::ResetCont,
            _ => return None,
        })
    }

    /// The command number.
    pub const fn cmd(self) -> u32 {
        self as u32
    }

    /// Size in bytes of the op's argument struct: how much the hypervisor
    /// copies in from the guest pointer in `rsi` (spec §1.1).
    pub const fn arg_size(self) -> usize {
        match self {
            Self::BindInterdomain | Self::BindVirq | Self::BindPirq => 12,
            Self::Close | Self::Send | Self::Unmask => 4,
            Self::Status | Self::InitControl => 24,
            Self::AllocUnbound
            | Self::BindIpi
            | Self::BindVcpu
            | Self::ExpandArray
            | Self::SetPriority => 8,
            Self::Reset | Self::ResetCont => 2,
        }
    }

    /// Whether a successful op copies its struct back to the guest.
    pub const fn copies_back(self) -> bool {
        matches!(
            self,
            Self::BindInterdomain
                | Self::BindVirq
                | Self::BindPirq
                | Self::Status
                | Self::AllocUnbound
                | Self::BindIpi
                | Self::InitControl
        )
    }
}

/// EVTCHNSTAT_*: the `status` field of [`crate::abi::EvtchnStatus`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvtchnStat {
    /// Free or reserved (port 0).
    Closed = 0,
    /// Allocated, waiting for a remote domain to bind.
    Unbound = 1,
    /// Connected to a port of another (or the same) domain.
    Interdomain = 2,
    /// Bound to a physical IRQ.
    Pirq = 3,
    /// Bound to a virtual IRQ.
    Virq = 4,
    /// Bound for inter-vcpu notification.
    Ipi = 5,
}

impl EvtchnStat {
    /// The status with ABI value `value`.
    pub const fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Closed,
            1 => Self::Unbound,
            2 => Self::Interdomain,
            3 => Self::Pirq,
            4 => Self::Virq,
            5 => Self::Ipi,
            _ => return None,
        })
    }
}
