//! The hypervisor command line: space-separated `key=value` words.
//!
//! Known keys: `loglvl=` (error|warn|info|debug|trace) and `selftest=`
//! (only meaningful in builds with the `selftest` feature), `evtchn=`
//! (a static event channel, `A:P,B:Q`; see [`crate::static_evtchn`]; may
//! repeat), and `console_colour=` (on|off, default off: colour each
//! domain's `(dN)` lines with ANSI escapes; the hypervisor cannot tell
//! whether the serial line ends on a terminal, so whoever starts QEMU
//! decides). Words without `=` (QEMU passes the image's file name first)
//! are ignored.

use arrayvec::ArrayString;
use log::LevelFilter;

/// Parsed options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Console log level (default info).
    pub log_level: LevelFilter,
    /// The self-test to run, if any.
    pub selftest: Option<ArrayString<32>>,
    /// Static event channels to connect before the domains run.
    pub static_channels: arrayvec::ArrayVec<crate::static_evtchn::StaticChannel, 16>,
    /// `console_colour=on`: guest lines in a colour per domain.
    pub console_colour: bool,
    /// Words that were not understood, to report once logging works.
    pub rejected: ArrayString<256>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::Info,
            selftest: None,
            static_channels: arrayvec::ArrayVec::new(),
            console_colour: false,
            rejected: ArrayString::new(),
        }
    }
}

fn parse_level(value: &str) -> Option<LevelFilter> {
    match value {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        "none" | "off" => Some(LevelFilter::Off),
        _ => None,
    }
}

fn reject(options: &mut Options, word: &str) {
    if !options.rejected.is_empty() {
        let _ = options.rejected.try_push(' ');
    }
    let _ = options.rejected.try_push_str(word);
}

/// Parses `line`.
pub fn parse(line: &str) -> Options {
    let mut options = Options::default();
    for word in line.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "loglvl" => match parse_level(value) {
                Some(level) => options.log_level = level,
                None => reject(&mut options, word),
            },
            "selftest" => match ArrayString::from(value) {
                Ok(name) => options.selftest = Some(name),
                Err(_) => reject(&mut options, word),
            },
            "evtchn" => match crate::static_evtchn::parse(value) {
                Some(channel) if options.static_channels.try_push(channel).is_ok() => {}
                _ => reject(&mut options, word),
            },
            "console_colour" => match value {
                "on" => options.console_colour = true,
                "off" => options.console_colour = false,
                _ => reject(&mut options, word),
            },
            _ => reject(&mut options, word),
        }
    }
    options
}
