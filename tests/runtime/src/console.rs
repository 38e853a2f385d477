//! Console output through `console_io(CONSOLEIO_write)` (spec §7.12), and the
//! [`print!`](crate::print) / [`println!`](crate::println) macros.
//!
//! Text is formatted into a small buffer on the stack and handed to the
//! hypervisor when the buffer fills and when the writer is dropped, so there
//! is no global lock an event handler could deadlock on; output from an
//! upcall may interleave with a line being printed, at chunk granularity.

use core::fmt;

use crate::hypercall::{hypercall3, nr};

/// `console_io` command: write `count` bytes from `buffer`.
pub const CONSOLEIO_WRITE: u64 = 0;

/// Writes `bytes` to the hypervisor console; returns the raw result.
pub fn write_bytes(bytes: &[u8]) -> i64 {
    // SAFETY: the hypervisor only reads `bytes.len()` bytes from a live slice.
    unsafe {
        hypercall3(
            nr::CONSOLE_IO,
            CONSOLEIO_WRITE,
            bytes.len() as u64,
            bytes.as_ptr() as u64,
        )
    }
}

/// Issues `console_io(command, count, buffer)` with a live buffer; for
/// tests of other commands and counts.
pub fn raw(command: u64, buffer: &mut [u8]) -> i64 {
    // SAFETY: the hypervisor reads or writes at most `buffer.len()` bytes of
    // a live, exclusive slice.
    unsafe {
        hypercall3(
            nr::CONSOLE_IO,
            command,
            buffer.len() as u64,
            buffer.as_mut_ptr() as u64,
        )
    }
}

/// Bytes gathered before a `console_io` call.
const CHUNK: usize = 256;

/// A `fmt::Write` sink that batches text into `console_io` writes.
pub struct Console {
    buffer: [u8; CHUNK],
    len: usize,
}

impl Console {
    /// An empty writer.
    pub const fn new() -> Console {
        Console {
            buffer: [0; CHUNK],
            len: 0,
        }
    }

    /// Hands the buffered bytes to the hypervisor.
    pub fn flush(&mut self) {
        if let Some(pending) = self.buffer.get(..self.len)
            && !pending.is_empty()
        {
            write_bytes(pending);
        }
        self.len = 0;
    }
}

impl Default for Console {
    fn default() -> Console {
        Console::new()
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for &byte in text.as_bytes() {
            if self.len == CHUNK {
                self.flush();
            }
            if let Some(slot) = self.buffer.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Formats `args` to the console (used by the macros).
pub fn print_args(args: fmt::Arguments<'_>) {
    let mut console = Console::new();
    // Console::write_str never fails.
    let _ = fmt::Write::write_fmt(&mut console, args);
}

/// Prints to the hypervisor console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print_args(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the hypervisor console, like `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_args(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print_args(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
