//! The COM1 16550 UART for the console: polled output, and input through
//! the receive interrupt (the debug keys).
//!
//! A small driver rather than a dependency: set 115200 8N1 with FIFOs,
//! wait for the transmit holding register before each byte, and read
//! received bytes when the line status register says one is there.

use x86_64::instructions::port::Port;

/// I/O base of COM1.
pub const COM1: u16 = 0x3f8;

/// A 16550-compatible UART at a fixed I/O base.
#[derive(Clone, Copy, Debug)]
pub struct Serial {
    base: u16,
}

impl Serial {
    /// The UART at `base` (not yet initialised).
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    fn out(&self, register: u16, value: u8) {
        let mut port = Port::<u8>::new(self.base + register);
        // SAFETY: the ports base..base+8 belong to the UART, which only this
        // driver programs; writing its registers has no memory effects.
        unsafe { port.write(value) };
    }

    fn input(&self, register: u16) -> u8 {
        let mut port = Port::<u8>::new(self.base + register);
        // SAFETY: as in `out`; reading a UART register has no memory
        // effects (reading the receive buffer only pops the UART's FIFO).
        unsafe { port.read() }
    }

    /// Programs 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on,
    /// UART interrupts off.
    pub fn init(&self) {
        self.out(1, 0x00); // interrupt enable: none
        self.out(3, 0x80); // DLAB on
        self.out(0, 0x01); // divisor low: 115200
        self.out(1, 0x00); // divisor high
        self.out(3, 0x03); // 8N1, DLAB off
        self.out(2, 0xc7); // FIFO on, cleared, 14-byte threshold
        self.out(4, 0x03); // DTR, RTS
    }

    /// Turns on the "received data available" interrupt (COM1: ISA IRQ 4)
    /// with a one-byte FIFO trigger, so that every key raises it at once;
    /// OUT2 gates the interrupt line on PC hardware.
    pub fn enable_receive_interrupt(&self) {
        self.out(2, 0x07); // FIFO on, cleared, 1-byte threshold
        self.out(4, 0x0b); // DTR, RTS, OUT2
        self.out(1, 0x01); // interrupt enable: received data
    }

    /// The next received byte, if one is waiting.
    pub fn read_byte(&self) -> Option<u8> {
        (self.input(5) & 0x01 != 0).then(|| self.input(0))
    }

    /// Writes one byte, waiting for room in the transmitter.
    pub fn write_byte(&self, byte: u8) {
        // A bounded wait: a missing UART must not hang the hypervisor.
        for _ in 0..100_000 {
            if self.input(5) & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.out(0, byte);
    }

    /// Writes bytes as they are (console lines end with a bare `\n`).
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_byte(byte);
        }
    }
}

impl core::fmt::Write for Serial {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        self.write_bytes(text.as_bytes());
        Ok(())
    }
}
