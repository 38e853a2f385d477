//! The CMOS real-time clock, read once for the guests' wall clock.

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
