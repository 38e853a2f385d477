//! A domain's port table: channels in lazily allocated 64-port buckets.
//!
//! `valid_evtchns` counts the ports that have storage. It only grows, in
//! bucket steps, and a port below it always has a channel (XSA-338). New
//! storage is published before the count (Release) and readers load the
//! count before the storage (Acquire), so a port that reads as valid always
//! finds its bucket (XSA-340). Storage is allocated before anything else in
//! an op changes and published only when the op commits, so a failing op
//! leaves the table exactly as it was (XSA-47).

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::abi::{EVTCHN_FIFO_NR_CHANNELS, EVTCHNS_PER_BUCKET, Errno, Port};
use crate::channel::{Channel, ChannelState};
use crate::sync::{AtomicU32, OnceSlot, Ordering};

type Bucket = Box<[Channel]>;

pub(crate) struct PortTable {
    /// One slot per bucket the domain could ever need.
    buckets: Box<[OnceSlot<Bucket>]>,
    valid_evtchns: AtomicU32,
    /// Every port below this one is allocated (or reserved): the scan for a
    /// free port starts here. Read and written only under the event lock
    /// (Relaxed), raised past each claimed port, lowered by each freed one.
    /// It only skips work: the lowest free port is found either way. (FIFO
    /// must not raise it past a free port it skips as busy.)
    scan_start: AtomicU32,
}

/// A free port found by [`PortTable::find_free`], not yet claimed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FreePort {
    pub(crate) port: Port,
    needs_bucket: bool,
}

/// A free port with its storage allocated but not yet published.
pub(crate) struct PreparedPort {
    pub(crate) port: Port,
    new_bucket: Option<Bucket>,
}

fn bucket_index(port: u32) -> usize {
    (port / EVTCHNS_PER_BUCKET) as usize
}

fn new_bucket(first_port: u32) -> Result<Bucket, Errno> {
    let mut channels = Vec::new();
    channels
        .try_reserve_exact(EVTCHNS_PER_BUCKET as usize)
        .map_err(|_| Errno::ENOMEM)?;
    for offset in 0..EVTCHNS_PER_BUCKET {
        let state = if first_port + offset == 0 {
            ChannelState::Reserved
        } else {
            ChannelState::Free
        };
        channels.push(Channel::new(state));
    }
    Ok(channels.into_boxed_slice())
}

impl PortTable {
    /// A table able to grow up to `max_evtchn_port` (capped at the largest
    /// ABI's limit), with bucket 0 present and port 0 reserved.
    pub(crate) fn new(max_evtchn_port: u32) -> Result<Self, Errno> {
        let highest_port = max_evtchn_port.min(EVTCHN_FIFO_NR_CHANNELS - 1);
        let slot_count = bucket_index(highest_port) + 1;
        let mut buckets = Vec::new();
        buckets
            .try_reserve_exact(slot_count)
            .map_err(|_| Errno::ENOMEM)?;
        buckets.extend((0..slot_count).map(|_| OnceSlot::new()));
        let table = Self {
            buckets: buckets.into_boxed_slice(),
            valid_evtchns: AtomicU32::new(0),
            scan_start: AtomicU32::new(1),
        };
        let first = new_bucket(0)?;
        table.publish_bucket(0, first);
        Ok(table)
    }

    /// Ports with storage (`valid_evtchns`). Acquire: pairs with the Release
    /// in `publish_bucket`, so storage below the value is visible.
    pub(crate) fn valid_evtchns(&self) -> u32 {
        self.valid_evtchns.load(Ordering::Acquire)
    }

    /// Xen's `port_is_valid()`: the port has storage (it may be free).
    pub(crate) fn is_valid(&self, port: Port) -> bool {
        port.0 < self.valid_evtchns()
    }

    /// The channel of a valid port; `None` (→ -EINVAL) for any other value.
    pub(crate) fn channel(&self, port: Port) -> Option<&Channel> {
        if !self.is_valid(port) {
            return None;
        }
        let bucket = self.buckets.get(bucket_index(port.0))?.get()?;
        bucket.get((port.0 % EVTCHNS_PER_BUCKET) as usize)
    }

    /// Xen's `get_free_port()` scan, without claiming anything: the lowest
    /// port up to `limit` that is free, or the first port past the storage.
    /// The caller holds the domain's event lock, so states cannot change.
    pub(crate) fn find_free(&self, limit: u32) -> Result<FreePort, Errno> {
        let valid = self.valid_evtchns();
        for port in self.scan_start.load(Ordering::Relaxed)..=limit {
            if port >= valid {
                if bucket_index(port) >= self.buckets.len() {
                    break;
                }
                return Ok(FreePort {
                    port: Port(port),
                    needs_bucket: true,
                });
            }
            let channel = self.channel(Port(port)).ok_or(Errno::ENOSPC)?;
            if *channel.read() == ChannelState::Free {
                return Ok(FreePort {
                    port: Port(port),
                    needs_bucket: false,
                });
            }
        }
        Err(Errno::ENOSPC)
    }

    /// Allocate the storage a free port needs (-ENOMEM), changing nothing.
    pub(crate) fn prepare(&self, free: FreePort) -> Result<PreparedPort, Errno> {
        let new_bucket = if free.needs_bucket {
            Some(new_bucket(free.port.0 - free.port.0 % EVTCHNS_PER_BUCKET)?)
        } else {
            None
        };
        Ok(PreparedPort {
            port: free.port,
            new_bucket,
        })
    }

    /// Publish a prepared port's storage and return its channel (still
    /// free). Cannot fail: the slot exists and is empty because the event
    /// lock has been held since `find_free`.
    pub(crate) fn publish(&self, prepared: PreparedPort) -> Option<&Channel> {
        if let Some(bucket) = prepared.new_bucket {
            self.publish_bucket(bucket_index(prepared.port.0), bucket);
        }
        self.scan_start
            .store(prepared.port.0.saturating_add(1), Ordering::Relaxed);
        self.channel(prepared.port)
    }

    /// A port became free: the next scan must look at it again. The caller
    /// holds the event lock.
    pub(crate) fn note_freed(&self, port: Port) {
        self.scan_start.fetch_min(port.0.max(1), Ordering::Relaxed);
    }

    fn publish_bucket(&self, index: usize, bucket: Bucket) {
        if let Some(slot) = self.buckets.get(index) {
            slot.call_once(|| bucket);
            // Release: pairs with the Acquire in `valid_evtchns()`; the
            // bucket is visible before the port count that covers it.
            let covered = (index as u32 + 1) * EVTCHNS_PER_BUCKET;
            self.valid_evtchns.fetch_max(covered, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_table_has_one_bucket_and_reserved_port_0() {
        let table = PortTable::new(1023).unwrap();
        assert_eq!(table.valid_evtchns(), 64);
        assert_eq!(
            *table.channel(Port(0)).unwrap().read(),
            ChannelState::Reserved
        );
        assert_eq!(*table.channel(Port(63)).unwrap().read(), ChannelState::Free);
        assert!(table.channel(Port(64)).is_none());
        assert!(table.channel(Port(u32::MAX)).is_none());
    }

    #[test]
    fn prepared_port_changes_nothing_until_published() {
        let table = PortTable::new(1023).unwrap();
        for port in 1..64 {
            *table.channel(Port(port)).unwrap().write() = ChannelState::Ipi;
        }
        let free = table.find_free(1023).unwrap();
        assert_eq!(free.port, Port(64));
        let prepared = table.prepare(free).unwrap();
        assert_eq!(table.valid_evtchns(), 64, "not yet published");
        drop(prepared);
        assert_eq!(table.valid_evtchns(), 64);
        let prepared = table.prepare(table.find_free(1023).unwrap()).unwrap();
        assert!(table.publish(prepared).is_some());
        assert_eq!(table.valid_evtchns(), 128);
    }

    #[test]
    fn find_free_respects_the_limit_and_the_slot_count() {
        let table = PortTable::new(10).unwrap();
        for port in 1..=10 {
            *table.channel(Port(port)).unwrap().write() = ChannelState::Ipi;
        }
        assert_eq!(table.find_free(10).err(), Some(Errno::ENOSPC));
        // A larger limit than the table was built for still stops at the
        // storage the table can have (one bucket for max port 10).
        assert_eq!(table.find_free(200).map(|free| free.port), Ok(Port(11)));
        for port in 11..64 {
            *table.channel(Port(port)).unwrap().write() = ChannelState::Ipi;
        }
        assert_eq!(table.find_free(200).err(), Some(Errno::ENOSPC));
    }
}
