//! The CMOS real-time clock: read once for the guests' wall clock, and its
//! periodic interrupt (ISA IRQ 8), the line Sluice routes to a guest PIRQ.

use x86_64::instructions::port::Port;

fn read_register(register: u8) -> u8 {
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: ports 0x70/0x71 are the CMOS index and data registers on every
    // PC QEMU emulates; selecting a clock register (bit 7, NMI disable, left
    // clear) and reading it has no other effect.
    unsafe { index.write(register) };
    // SAFETY: as above.
    unsafe { data.read() }
}

/// Serialises the CMOS index/data pair: the boot-time clock read and the
/// periodic-interrupt driver (whose acknowledgement runs in interrupt
/// context) both select a register and then access it. Held with
/// interrupts off.
static CMOS: spin::Mutex<()> = spin::Mutex::new(());

const REGISTER_A: u8 = 0x0a;
const REGISTER_B: u8 = 0x0b;
const REGISTER_C: u8 = 0x0c;
/// Register A: the rate-select field (bits 0..4).
const RATE_SELECT_MASK: u8 = 0x0f;
/// Register B: periodic interrupt enable.
const PERIODIC_INTERRUPT_ENABLE: u8 = 1 << 6;

fn write_register(register: u8, value: u8) {
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    // SAFETY: ports 0x70/0x71 are the CMOS index and data registers; the
    // callers write only the rate-select bits of register A and the PIE bit
    // of register B, which change nothing but the periodic interrupt.
    unsafe { index.write(register) };
    // SAFETY: as above.
    unsafe { data.write(value) };
}

/// The periodic-interrupt frequency for a rate-select value `rate` (3..=15):
/// 32768 Hz >> (rate - 1), e.g. 10 → 64 Hz.
pub fn periodic_hz(rate: u8) -> u32 {
    32_768 >> (rate.clamp(3, 15) - 1)
}

/// Starts the RTC's periodic interrupt (ISA IRQ 8) at rate-select `rate`
/// (clamped to 3..=15, see [`periodic_hz`]) and acknowledges any flag
/// already latched, so that the next period raises a fresh interrupt.
pub fn start_periodic(rate: u8) {
    let rate = rate.clamp(3, 15);
    crate::cpu::without_interrupts(|| {
        let _guard = CMOS.lock();
        let register_a = read_register(REGISTER_A);
        write_register(REGISTER_A, (register_a & !RATE_SELECT_MASK) | rate);
        let register_b = read_register(REGISTER_B);
        write_register(REGISTER_B, register_b | PERIODIC_INTERRUPT_ENABLE);
        let _ = read_register(REGISTER_C);
    });
}

/// Stops the RTC's periodic interrupt and acknowledges a latched one.
pub fn stop_periodic() {
    crate::cpu::without_interrupts(|| {
        let _guard = CMOS.lock();
        let register_b = read_register(REGISTER_B);
        write_register(REGISTER_B, register_b & !PERIODIC_INTERRUPT_ENABLE);
        let _ = read_register(REGISTER_C);
    });
}

/// Acknowledges the RTC's interrupt: reading register C clears its flags
/// and drops IRQ 8, so the next period can raise it again. Returns
/// register C as read (bit 6 = periodic flag). Safe in interrupt context:
/// the CMOS lock is only ever held with interrupts off, briefly.
pub fn acknowledge() -> u8 {
    crate::cpu::without_interrupts(|| {
        let _guard = CMOS.lock();
        read_register(REGISTER_C)
    })
}

fn from_bcd(value: u8, is_binary: bool) -> u64 {
    if is_binary {
        u64::from(value)
    } else {
        u64::from((value >> 4) * 10 + (value & 0xf))
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Seconds since 1970 (UTC, as QEMU's RTC keeps it), or `None` if the clock
/// reads as nonsense. Waits out an update in progress.
pub fn read_unix_seconds() -> Option<u64> {
    crate::cpu::without_interrupts(|| {
        let _guard = CMOS.lock();
        for _ in 0..1_000_000 {
            if read_register(0x0a) & 0x80 == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        let status_b = read_register(0x0b);
        let is_binary = status_b & 0x04 != 0;
        let is_24_hour = status_b & 0x02 != 0;
        let seconds = from_bcd(read_register(0x00), is_binary);
        let minutes = from_bcd(read_register(0x02), is_binary);
        let raw_hours = read_register(0x04);
        let is_pm = raw_hours & 0x80 != 0;
        let mut hours = from_bcd(raw_hours & 0x7f, is_binary);
        if !is_24_hour {
            hours %= 12;
            if is_pm {
                hours += 12;
            }
        }
        let day = from_bcd(read_register(0x07), is_binary);
        let month = from_bcd(read_register(0x08), is_binary);
        let year = 2000 + from_bcd(read_register(0x09), is_binary);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hours > 23 {
            return None;
        }
        let days = days_from_civil(year as i64, month as i64, day as i64);
        let total = days * 86_400 + (hours * 3600 + minutes * 60 + seconds) as i64;
        u64::try_from(total).ok()
    })
}
