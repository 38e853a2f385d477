//! The console: `log` records on COM1, one line each, prefixed with the
//! time since boot (TSC-based, seconds.microseconds) and the CPU number.
//!
//! Guest output goes out as `(dN) text` lines; with `console_colour=on`
//! each domain's lines are wrapped in an ANSI colour of their own (for a
//! person at a terminal; scenarios read plain lines).
//!
//! Lines from different CPUs never interleave: a line is written under a
//! spin lock taken with interrupts off. The CPU reporting a fatal error
//! writes without the lock, since a CPU it stopped may hold it.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use arch::serial::{COM1, Serial};
use log::{LevelFilter, Log, Metadata, Record};

struct Console {
    is_locked: AtomicBool,
}

static CONSOLE: Console = Console {
    is_locked: AtomicBool::new(false),
};

/// Whether guest lines are coloured (`console_colour=on`).
static COLOUR: AtomicBool = AtomicBool::new(false);

/// ANSI SGR foreground colours for guest lines, by domain id modulo the
/// count: cyan, green, yellow, magenta, blue, bright red. (Guests cannot
/// forge them: console_io drops control bytes, ESC included.)
const DOMAIN_COLOURS: [&str; 6] = ["36", "32", "33", "35", "34", "91"];

/// Turns the per-domain colouring of guest lines on or off.
pub fn set_colour(on: bool) {
    COLOUR.store(on, Ordering::Relaxed);
}

impl Console {
    /// Takes the line lock; returns whether it must be released.
    fn acquire(&self) -> bool {
        loop {
            // Acquire: pairs with the Release in `release`, so lines stay
            // whole.
            if self
                .is_locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            if arch::fatal::is_reporting() {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    fn release(&self) {
        self.is_locked.store(false, Ordering::Release);
    }
}

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        arch::cpu::without_interrupts(|| {
            let is_held = self.acquire();
            let mut serial = Serial::new(COM1);
            let cpu = arch::percpu::current().index();
            let _ = match arch::tsc::since_boot() {
                Some((seconds, micros)) => write!(serial, "[{seconds:5}.{micros:06}] "),
                None => write!(serial, "[    -.------] "),
            };
            let _ = writeln!(serial, "cpu{cpu} {:<5} {}", record.level(), record.args());
            if is_held {
                self.release();
            }
        });
    }

    fn flush(&self) {}
}

/// Initialises COM1 and installs the console as the `log` backend.
pub fn init(level: LevelFilter) {
    Serial::new(COM1).init();
    let _ = log::set_logger(&CONSOLE);
    log::set_max_level(level);
}

/// Writes one line of guest output as `(dN) text`, whole, on its own line.
pub fn guest_line(domain: evtchn_core::DomId, text: &[u8]) {
    arch::cpu::without_interrupts(|| {
        let is_held = CONSOLE.acquire();
        let serial = Serial::new(COM1);
        let colour = COLOUR
            .load(Ordering::Relaxed)
            .then(|| DOMAIN_COLOURS.get(usize::from(domain.0) % DOMAIN_COLOURS.len()))
            .flatten();
        let mut prefix = arrayvec::ArrayString::<24>::new();
        if let Some(colour) = colour {
            let _ = write!(prefix, "\x1b[{colour}m");
        }
        let _ = write!(prefix, "(d{}) ", domain.0);
        serial.write_bytes(prefix.as_bytes());
        serial.write_bytes(text);
        if colour.is_some() {
            serial.write_bytes(b"\x1b[0m");
        }
        serial.write_bytes(b"\n");
        if is_held {
            CONSOLE.release();
        }
    });
}

/// Prints a message the hypervisor writes about a domain, as a guest line.
pub fn guest_notice(domain: evtchn_core::DomId, message: core::fmt::Arguments<'_>) {
    let mut text = arrayvec::ArrayString::<256>::new();
    let _ = write!(text, "{message}");
    guest_line(domain, text.as_bytes());
}

/// Changes the console log level.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}
