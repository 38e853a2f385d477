//! console_io (spec §7.12): CONSOLEIO_write from every domain (a deliberate
//! deviation from Xen's release builds, which allow only the control
//! domain), printed line by line as `(dN) text`; CONSOLEIO_read gives 0
//! bytes (Sluice has no console input for guests).

use evtchn_core::Errno;

use super::Call;

const CONSOLEIO_WRITE: u64 = 0;
const CONSOLEIO_READ: u64 = 1;
/// Xen copies in chunks of this size.
const CHUNK: usize = 127;

/// `console_io(cmd, count, buffer)`.
pub fn console_io(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (command, count, buffer) = (call.argument(0), call.argument(1), call.guest_in(2));
    match command {
        CONSOLEIO_WRITE => {
            let mut done = 0u64;
            while done < count {
                let chunk = (count - done).min(CHUNK as u64) as usize;
                let mut bytes = [0u8; CHUNK];
                let target = bytes.get_mut(..chunk).ok_or(Errno::EFAULT)?;
                buffer.offset(done).read(target)?;
                for &byte in target.iter() {
                    put(call, byte);
                }
                done += chunk as u64;
            }
            Ok(0)
        }
        CONSOLEIO_READ => {
            if count > i32::MAX as u64 {
                return Err(Errno::E2BIG);
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Adds one byte to the domain's line; a newline (or a full line) prints it.
fn put(call: &Call<'_>, byte: u8) {
    let mut line = call.domain.console_line.lock();
    if byte == b'\n' {
        crate::console::guest_line(call.domain.id, &line);
        line.clear();
        return;
    }
    // Drop what a terminal would misread; keep tabs.
    if !(byte == b'\t' || (0x20..0x7f).contains(&byte)) {
        return;
    }
    if line.try_push(byte).is_err() {
        crate::console::guest_line(call.domain.id, &line);
        line.clear();
        let _ = line.try_push(byte);
    }
}
