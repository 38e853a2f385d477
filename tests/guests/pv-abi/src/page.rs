//! The hypercall page as the hypervisor wrote it (spec §7.3): 128 stubs of
//! 32 bytes, `push rcx; push r11; mov eax, nr; syscall; pop r11; pop rcx;
//! ret` padded with int3, and stub 23 (iret) `push rcx; push r11; push rax;
//! mov eax, 23; syscall`.

use sluice_guest::hypercall::{self, STUB_SIZE, nr};
use sluice_guest::{check_eq, println};

/// The bytes stub `number` must hold.
fn expected_stub(number: u32) -> [u8; 32] {
    let mut stub = [0xcc_u8; 32];
    let code: &[u8] = if number == nr::IRET {
        &[0x51, 0x41, 0x53, 0x50, 0xb8, 0, 0, 0, 0, 0x0f, 0x05]
    } else {
        &[
            0x51, 0x41, 0x53, 0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3,
        ]
    };
    for (slot, byte) in stub.iter_mut().zip(code) {
        *slot = *byte;
    }
    let immediate = if number == nr::IRET { 5 } else { 4 };
    for (offset, byte) in number.to_le_bytes().iter().enumerate() {
        if let Some(slot) = stub.get_mut(immediate + offset) {
            *slot = *byte;
        }
    }
    stub
}

/// Compares every stub with the spec's bytes.
pub fn hypercall_page() {
    let base = hypercall::page_address();
    let mut wrong = 0;
    let mut iret_ok = false;
    for number in 0..128u32 {
        let mut stub = [0u8; 32];
        for (offset, slot) in stub.iter_mut().enumerate() {
            let address = base + u64::from(number) * STUB_SIZE + offset as u64;
            // SAFETY: the address lies inside the 4 KiB hypercall page of the
            // image, mapped readable for the guest's life.
            *slot = unsafe { core::ptr::read_volatile(address as *const u8) };
        }
        let matches = stub == expected_stub(number);
        if number == nr::IRET {
            iret_ok = matches;
        } else if !matches {
            if wrong == 0 {
                println!("# stub {number}: {stub:02x?}");
            }
            wrong += 1;
        }
    }
    check_eq!(
        wrong,
        0,
        "hypercall page: the 127 ordinary stubs are push rcx/r11, mov eax nr, syscall, pop, ret, int3 padding"
    );
    check_eq!(
        iret_ok,
        true,
        "hypercall page: stub 23 is push rcx/r11/rax, mov eax 23, syscall, int3 padding"
    );
}
