//! `evtchn-basics`: placeholder.
#![no_std]
#![no_main]
sluice_guest::entry!(main);
fn main(_start_info: &'static sluice_guest::StartInfo) {}
