//! ABI numbers and encodings against the spec's tables (spec §0, §1, §3, §5).

use evtchn_core::abi::*;
use evtchn_core::{DomId, Errno, Port, VcpuId, Virq};

#[test]
fn errno_numbers_match_xen() {
    let table: [(Errno, i32); 17] = [
        (Errno::EPERM, 1),
        (Errno::ENOENT, 2),
        (Errno::ESRCH, 3),
        (Errno::ENXIO, 6),
        (Errno::E2BIG, 7),
        (Errno::EAGAIN, 11),
        (Errno::ENOMEM, 12),
        (Errno::EACCES, 13),
        (Errno::EFAULT, 14),
        (Errno::EBUSY, 16),
        (Errno::EEXIST, 17),
        (Errno::EINVAL, 22),
        (Errno::ENOSPC, 28),
        (Errno::ENOSYS, 38),
        (Errno::ETIME, 62),
        (Errno::ERESTART, 85),
        (Errno::EOPNOTSUPP, 95),
    ];
    for (errno, number) in table {
        assert_eq!(errno.number(), number, "{errno:?}");
        assert_eq!(errno as i32, number);
        assert_eq!(errno.to_return_value(), -i64::from(number));
        assert_eq!(Errno::from_number(number), Some(errno));
    }
    assert_eq!(Errno::from_number(0), None, "no zero variant");
}

#[test]
fn domid_constants_match_xen_h() {
    assert_eq!(DomId::FIRST_RESERVED, DomId(0x7FF0));
    assert_eq!(DomId::SELF, DomId(0x7FF0));
    assert_eq!(DomId::IO, DomId(0x7FF1));
    assert_eq!(DomId::XEN, DomId(0x7FF2));
    assert_eq!(DomId::COW, DomId(0x7FF3));
    assert_eq!(DomId::INVALID, DomId(0x7FF4));
    assert_eq!(DomId::IDLE, DomId(0x7FFF));
    assert_eq!(DomId::MASK, 0x7FFF);
    assert!(DomId(0x7FEF).is_real());
    assert!(!DomId::SELF.is_real());
}

#[test]
fn evtchnstat_values_match_the_abi() {
    let table = [
        (EvtchnStat::Closed, 0),
        (EvtchnStat::Unbound, 1),
        (EvtchnStat::Interdomain, 2),
        (EvtchnStat::Pirq, 3),
        (EvtchnStat::Virq, 4),
        (EvtchnStat::Ipi, 5),
    ];
    for (stat, value) in table {
        assert_eq!(stat as u32, value);
        assert_eq!(EvtchnStat::from_u32(value), Some(stat));
    }
    assert_eq!(EvtchnStat::from_u32(6), None);
}

#[test]
fn virq_classes_match_the_spec_table() {
    use VirqClass::*;
    let table: [(u32, VirqClass); 24] = [
        (0, PerVcpu),
        (1, PerVcpu),
        (2, Global),
        (3, Global),
        (4, Global),
        (5, UnusedGlobal),
        (6, Global),
        (7, PerVcpu),
        (8, Global),
        (9, Global),
        (10, Global),
        (11, Global),
        (12, Global),
        (13, PerVcpu),
        (14, UnusedGlobal),
        (15, UnusedGlobal),
        (16, ArchGlobal),
        (17, ArchGlobal),
        (18, ArchGlobal),
        (19, ArchGlobal),
        (20, ArchGlobal),
        (21, ArchGlobal),
        (22, ArchGlobal),
        (23, ArchGlobal),
    ];
    for (number, class) in table {
        let virq = Virq::new(number).unwrap();
        assert_eq!(virq.class(), class, "virq {number}");
        assert_eq!(virq.number(), number);
    }
    assert_eq!(Virq::new(24), None);
    assert_eq!(Virq::new(u32::MAX), None);
    assert_eq!(Virq::all().count(), 24);
    assert_eq!(Virq::MCA, Virq::ARCH_0);
    assert_eq!(Virq::ARCH_7.number(), 23);
    let named = [
        (Virq::TIMER, 0),
        (Virq::DEBUG, 1),
        (Virq::CONSOLE, 2),
        (Virq::DOM_EXC, 3),
        (Virq::TBUF, 4),
        (Virq::DEBUGGER, 6),
        (Virq::XENOPROF, 7),
        (Virq::CON_RING, 8),
        (Virq::PCPU_STATE, 9),
        (Virq::MEM_EVENT, 10),
        (Virq::ARGO, 11),
        (Virq::ENOMEM, 12),
        (Virq::XENPMU, 13),
    ];
    for (virq, number) in named {
        assert_eq!(virq.number(), number);
    }
}

#[test]
fn limits_match_the_spec() {
    assert_eq!(EVTCHN_2L_NR_CHANNELS, 4096);
    assert_eq!(EVTCHN_FIFO_NR_CHANNELS, 131072);
    assert_eq!(EVTCHN_FIFO_LINK_BITS, 17);
    assert_eq!(EVTCHNS_PER_BUCKET, 64);
    assert_eq!(EVTCHN_FIFO_PRIORITY_DEFAULT, 7);
    assert_eq!(EVTCHN_FIFO_PRIORITY_MAX, 0);
    assert_eq!(EVTCHN_FIFO_PRIORITY_MIN, 15);
    assert_eq!(SharedInfo::LEGACY_MAX_VCPUS, 32);
    assert_eq!(std::mem::size_of::<SharedInfo>(), 3136);
    assert_eq!(std::mem::size_of::<VcpuInfo>(), 64);
}

fn counting<const N: usize>() -> [u8; N] {
    std::array::from_fn(|index| index as u8 + 1)
}

#[test]
fn every_struct_decodes_fields_little_endian_at_spec_offsets() {
    let bytes = counting::<12>();
    let bind = EvtchnBindInterdomain::from_bytes(&bytes);
    assert_eq!(bind.remote_dom, DomId(0x0201));
    assert_eq!(bind.remote_port, Port(0x0807_0605));
    assert_eq!(bind.local_port, Port(0x0C0B_0A09));

    let virq = EvtchnBindVirq::from_bytes(&bytes);
    assert_eq!(
        (virq.virq, virq.vcpu, virq.port),
        (0x0403_0201, VcpuId(0x0807_0605), Port(0x0C0B_0A09))
    );

    let pirq = EvtchnBindPirq::from_bytes(&bytes);
    assert_eq!(
        (pirq.pirq, pirq.flags, pirq.port),
        (0x0403_0201, 0x0807_0605, Port(0x0C0B_0A09))
    );

    let bytes8 = counting::<8>();
    let alloc = EvtchnAllocUnbound::from_bytes(&bytes8);
    assert_eq!(
        (alloc.dom, alloc.remote_dom, alloc.port),
        (DomId(0x0201), DomId(0x0403), Port(0x0807_0605))
    );
    let ipi = EvtchnBindIpi::from_bytes(&bytes8);
    assert_eq!(
        (ipi.vcpu, ipi.port),
        (VcpuId(0x0403_0201), Port(0x0807_0605))
    );
    let bind_vcpu = EvtchnBindVcpu::from_bytes(&bytes8);
    assert_eq!(
        (bind_vcpu.port, bind_vcpu.vcpu),
        (Port(0x0403_0201), VcpuId(0x0807_0605))
    );
    let expand = EvtchnExpandArray::from_bytes(&bytes8);
    assert_eq!(expand.array_gfn, 0x0807_0605_0403_0201);
    let priority = EvtchnSetPriority::from_bytes(&bytes8);
    assert_eq!(
        (priority.port, priority.priority),
        (Port(0x0403_0201), 0x0807_0605)
    );

    let bytes4 = counting::<4>();
    assert_eq!(EvtchnClose::from_bytes(&bytes4).port, Port(0x0403_0201));
    assert_eq!(EvtchnSend::from_bytes(&bytes4).port, Port(0x0403_0201));
    assert_eq!(EvtchnUnmask::from_bytes(&bytes4).port, Port(0x0403_0201));
    assert_eq!(EvtchnReset::from_bytes(&counting::<2>()).dom, DomId(0x0201));

    let bytes24 = counting::<24>();
    let init = EvtchnInitControl::from_bytes(&bytes24);
    assert_eq!(init.control_gfn, 0x0807_0605_0403_0201);
    assert_eq!(init.offset, 0x0C0B_0A09);
    assert_eq!(init.vcpu, VcpuId(0x100F_0E0D));
    assert_eq!(init.link_bits, 0x11);
    let status = EvtchnStatus::from_bytes(&bytes24);
    assert_eq!(status.status, 0x0C0B_0A09);
    assert_eq!(status.vcpu, VcpuId(0x100F_0E0D));
    assert_eq!(status.pirq(), 0x1413_1211);
    assert_eq!(status.interdomain_port(), Port(0x1817_1615));
}

#[test]
fn every_struct_round_trips_its_fields() {
    let bytes12 = counting::<12>();
    assert_eq!(EvtchnBindVirq::from_bytes(&bytes12).to_bytes(), bytes12);
    assert_eq!(EvtchnBindPirq::from_bytes(&bytes12).to_bytes(), bytes12);
    // Padding is written back as zero.
    let mut expected = bytes12;
    expected[2] = 0;
    expected[3] = 0;
    assert_eq!(
        EvtchnBindInterdomain::from_bytes(&bytes12).to_bytes(),
        expected
    );
    let bytes8 = counting::<8>();
    assert_eq!(EvtchnAllocUnbound::from_bytes(&bytes8).to_bytes(), bytes8);
    assert_eq!(EvtchnBindIpi::from_bytes(&bytes8).to_bytes(), bytes8);
    assert_eq!(EvtchnBindVcpu::from_bytes(&bytes8).to_bytes(), bytes8);
    assert_eq!(EvtchnExpandArray::from_bytes(&bytes8).to_bytes(), bytes8);
    assert_eq!(EvtchnSetPriority::from_bytes(&bytes8).to_bytes(), bytes8);
    let bytes24 = counting::<24>();
    let mut init_expected = [0u8; 24];
    init_expected[..17].copy_from_slice(&bytes24[..17]);
    assert_eq!(
        EvtchnInitControl::from_bytes(&bytes24).to_bytes(),
        init_expected
    );
}

#[test]
fn sizes_are_the_spec_sizes() {
    use std::mem::size_of;
    assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
    assert_eq!(size_of::<EvtchnBindVirq>(), 12);
    assert_eq!(size_of::<EvtchnBindPirq>(), 12);
    assert_eq!(size_of::<EvtchnClose>(), 4);
    assert_eq!(size_of::<EvtchnSend>(), 4);
    assert_eq!(size_of::<EvtchnStatus>(), 24);
    assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
    assert_eq!(size_of::<EvtchnBindIpi>(), 8);
    assert_eq!(size_of::<EvtchnBindVcpu>(), 8);
    assert_eq!(size_of::<EvtchnUnmask>(), 4);
    assert_eq!(size_of::<EvtchnReset>(), 2);
    assert_eq!(size_of::<EvtchnInitControl>(), 24);
    assert_eq!(std::mem::align_of::<EvtchnInitControl>(), 8);
    assert_eq!(size_of::<EvtchnExpandArray>(), 8);
    assert_eq!(size_of::<EvtchnSetPriority>(), 8);
    for op in EvtchnOp::ALL {
        let size = match op {
            EvtchnOp::BindInterdomain => EvtchnBindInterdomain::SIZE,
            EvtchnOp::BindVirq => EvtchnBindVirq::SIZE,
            EvtchnOp::BindPirq => EvtchnBindPirq::SIZE,
            EvtchnOp::Close => EvtchnClose::SIZE,
            EvtchnOp::Send => EvtchnSend::SIZE,
            EvtchnOp::Status => EvtchnStatus::SIZE,
            EvtchnOp::AllocUnbound => EvtchnAllocUnbound::SIZE,
            EvtchnOp::BindIpi => EvtchnBindIpi::SIZE,
            EvtchnOp::BindVcpu => EvtchnBindVcpu::SIZE,
            EvtchnOp::Unmask => EvtchnUnmask::SIZE,
            EvtchnOp::Reset | EvtchnOp::ResetCont => EvtchnReset::SIZE,
            EvtchnOp::InitControl => EvtchnInitControl::SIZE,
            EvtchnOp::ExpandArray => EvtchnExpandArray::SIZE,
            EvtchnOp::SetPriority => EvtchnSetPriority::SIZE,
        };
        assert_eq!(op.arg_size(), size, "{op:?}");
    }
}
