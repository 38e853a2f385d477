//! A domain's port table: channels in 64-port buckets, the first one (ports
//! 0–63, where most domains keep all their ports) inline in the table and
//! the others allocated lazily.
//!
//! `valid_evtchns` counts the ports that have storage. It only grows, in
//! bucket steps, and a port below it always has a channel (XSA-338). New
//! storage is published before the count (Release) and readers load the
//! count before the storage (Acquire), so a port that reads as valid always
//! finds its bucket (XSA-340). Bucket 0 is part of the table from its
//! construction, before any reader can see the table, and the count starts
//! at 64: a port below 64 is found without loading the count at all, which
//! is the same answer the count would give (it never drops below 64), and
//! the storage it finds needs no publication. Storage is allocated before anything else in
//! an op changes and published only when the op commits, so a failing op
//! leaves the table exactly as it was (XSA-47).

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::abi::{EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_NR_CHANNELS, EVTCHNS_PER_BUCKET, Errno, Port};
use crate::channel::{Channel, ChannelKind, ChannelState};
use crate::sync::{AtomicU32, OnceSlot, Ordering};

/// A bucket's channels on the heap, as an array: its length is a
/// constant, so an index taken modulo the bucket size needs no bounds
/// check and the slot holds a thin pointer.
type Bucket = Box<[Channel; EVTCHNS_PER_BUCKET as usize]>;

/// Bucket 0's storage: inline. Under loom, whose channels are much larger
/// and whose threads run on small stacks, on the heap (same code, one
/// more indirection).
#[cfg(not(loom))]
type FirstBucket = [Channel; EVTCHNS_PER_BUCKET as usize];
#[cfg(loom)]
type FirstBucket = Box<[Channel]>;

/// Bucket 0 with port 0 reserved.
fn first_bucket() -> FirstBucket {
    let channel = |port: usize| {
        Channel::new(if port == 0 {
            ChannelState::Reserved
        } else {
            ChannelState::Free
        })
    };
    #[cfg(not(loom))]
    return core::array::from_fn(channel);
    #[cfg(loom)]
    return (0..EVTCHNS_PER_BUCKET as usize).map(channel).collect();
}

pub(crate) struct PortTable {
    /// Bucket 0, inline: a send on a port below 64 reaches its channel
    /// with one indexed load from the domain, instead of through a bucket
    /// slot and its heap block.
    first: FirstBucket,
    /// One slot per bucket the domain could ever need; slot 0 stays empty
    /// (its bucket is `first`).
    buckets: BucketSlots,
    valid_evtchns: AtomicU32,
    /// Every port below this one is allocated (or reserved): the scan for a
    /// free port starts here. Read and written only under the event lock
    /// (Relaxed), raised past each claimed port, lowered by each freed one.
    /// It only skips work: the lowest free port is found either way. It is
    /// never raised past a free port that was skipped as busy (FIFO), which
    /// a later scan must look at again.
    scan_start: AtomicU32,
}

/// Bucket slots of the 2-level range (ports below 4096).
const TWO_LEVEL_SLOTS: usize = (EVTCHN_2L_NR_CHANNELS / EVTCHNS_PER_BUCKET) as usize;

/// The bucket slots of a table: those of the 2-level range, where a
/// 2-level domain keeps all its ports, inline in the table, so that a
/// sender on a port of 64 or above reaches its bucket with one dependent
/// load less; the FIFO range's on the heap.
struct BucketSlots {
    two_level: [OnceSlot<Bucket>; TWO_LEVEL_SLOTS],
    fifo: Box<[OnceSlot<Bucket>]>,
    /// Slots the table may use (up to its highest port's bucket).
    len: usize,
}

impl BucketSlots {
    fn new(len: usize) -> Result<Self, Errno> {
        let fifo_len = len.saturating_sub(TWO_LEVEL_SLOTS);
        let mut fifo = Vec::new();
        fifo.try_reserve_exact(fifo_len)
            .map_err(|_| Errno::ENOMEM)?;
        fifo.extend((0..fifo_len).map(|_| OnceSlot::new()));
        Ok(Self {
            two_level: core::array::from_fn(|_| OnceSlot::new()),
            fifo: fifo.into_boxed_slice(),
            len,
        })
    }

    #[inline]
    fn get(&self, index: usize) -> Option<&OnceSlot<Bucket>> {
        if index >= self.len {
            return None;
        }
        match self.two_level.get(index) {
            Some(slot) => Some(slot),
            None => self.fifo.get(index - TWO_LEVEL_SLOTS),
        }
    }

    /// [`BucketSlots::get`] for a sender: a slot of the 2-level range
    /// without the comparison with `len`. Such a slot at or past `len` is
    /// never filled (buckets are published through [`BucketSlots::get`]),
    /// so its empty [`OnceSlot`] gives the sender the same `None`.
    #[inline]
    fn get_for_send(&self, index: usize) -> Option<&OnceSlot<Bucket>> {
        match self.two_level.get(index) {
            Some(slot) => Some(slot),
            None => self.get(index),
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A free port found by [`PortTable::find_free`] or
/// [`PortTable::find_exact`], not yet claimed.
#[derive(Clone, Copy)]
pub(crate) struct FreePort<'table> {
    pub(crate) port: Port,
    /// The port's channel, if it has storage already (found by the scan,
    /// so publishing need not look it up again).
    channel: Option<&'table Channel>,
    /// First bucket index that must be allocated (buckets from there up to
    /// the port's own), if the port has no storage yet.
    first_new_bucket: Option<usize>,
    /// Found by the lowest-free scan (so every port below it is taken).
    is_lowest: bool,
}

/// A free port with its storage allocated but not yet published.
pub(crate) struct PreparedPort<'table> {
    pub(crate) port: Port,
    /// See [`FreePort`]'s field.
    channel: Option<&'table Channel>,
    /// New buckets in ascending order, with the index of the first.
    new_buckets: Option<(usize, Vec<Bucket>)>,
    is_lowest: bool,
}

fn bucket_index(port: u32) -> usize {
    (port / EVTCHNS_PER_BUCKET) as usize
}

/// Buckets `first..=last`, allocated (-ENOMEM). Out of line: most ports
/// are found in storage that exists.
#[cold]
#[inline(never)]
fn new_buckets(first: usize, last: usize) -> Result<Vec<Bucket>, Errno> {
    let mut buckets = Vec::new();
    buckets
        .try_reserve_exact(last.saturating_sub(first) + 1)
        .map_err(|_| Errno::ENOMEM)?;
    for _ in first..=last {
        buckets.push(new_bucket()?);
    }
    Ok(buckets)
}

fn new_bucket() -> Result<Bucket, Errno> {
    let mut channels = Vec::new();
    channels
        .try_reserve_exact(EVTCHNS_PER_BUCKET as usize)
        .map_err(|_| Errno::ENOMEM)?;
    channels.extend((0..EVTCHNS_PER_BUCKET).map(|_| Channel::new(ChannelState::Free)));
    // Exactly a bucket's worth of channels: the conversion cannot fail.
    channels
        .into_boxed_slice()
        .try_into()
        .map_err(|_| Errno::ENOMEM)
}

impl PortTable {
    /// A table able to grow up to `max_evtchn_port` (capped at the largest
    /// ABI's limit), with bucket 0 present and port 0 reserved.
    pub(crate) fn new(max_evtchn_port: u32) -> Result<Self, Errno> {
        let highest_port = max_evtchn_port.min(EVTCHN_FIFO_NR_CHANNELS - 1);
        let slot_count = bucket_index(highest_port) + 1;
        Ok(Self {
            first: first_bucket(),
            buckets: BucketSlots::new(slot_count)?,
            valid_evtchns: AtomicU32::new(EVTCHNS_PER_BUCKET),
            scan_start: AtomicU32::new(1),
        })
    }

    /// Ports with storage (`valid_evtchns`). Acquire: pairs with the Release
    /// in `publish_bucket`, so storage below the value is visible.
    #[inline]
    pub(crate) fn valid_evtchns(&self) -> u32 {
        self.valid_evtchns.load(Ordering::Acquire)
    }

    /// Xen's `port_is_valid()`: the port has storage (it may be free).
    #[inline]
    pub(crate) fn is_valid(&self, port: Port) -> bool {
        port.0 < self.valid_evtchns()
    }

    /// The channel of a valid port; `None` (→ -EINVAL) for any other value.
    /// A port below 64 is in the inline bucket 0, always valid (see the
    /// module doc): no load of `valid_evtchns`.
    #[inline]
    pub(crate) fn channel(&self, port: Port) -> Option<&Channel> {
        if let Some(channel) = self.first.get(port.0 as usize) {
            return Some(channel);
        }
        if !self.is_valid(port) {
            return None;
        }
        let bucket = self.buckets.get(bucket_index(port.0))?.get()?;
        bucket.get((port.0 % EVTCHNS_PER_BUCKET) as usize)
    }

    /// The channel of `port` for a sender, to which a free port and an
    /// invalid one give the same answer (-EINVAL): [`PortTable::channel`]
    /// without the load of `valid_evtchns` for a port of 64 or above. Its
    /// bucket slot alone says whether it has storage: a slot is filled
    /// (Release) before the count covers it, and `get` reads it with
    /// Acquire (XSA-340); a port found this way before the count covers it
    /// is in a bucket being published by an allocation, so it is free.
    #[inline]
    pub(crate) fn channel_for_send(&self, port: Port) -> Option<&Channel> {
        if let Some(channel) = self.first.get(port.0 as usize) {
            return Some(channel);
        }
        let bucket = self.buckets.get_for_send(bucket_index(port.0))?.get()?;
        bucket.get((port.0 % EVTCHNS_PER_BUCKET) as usize)
    }

    /// Xen's `get_free_port()` scan, without claiming anything: the lowest
    /// port up to `limit` that is free and not busy (FIFO: still linked),
    /// or the first port past the storage. The caller holds the domain's
    /// event lock, so states cannot change, and each is read from its
    /// channel's summary word without the channel's lock.
    #[inline]
    pub(crate) fn find_free(
        &self,
        limit: u32,
        is_busy: impl Fn(Port) -> bool,
    ) -> Result<FreePort<'_>, Errno> {
        let valid = self.valid_evtchns();
        let mut skipped_busy = false;
        for port in self.scan_start.load(Ordering::Relaxed)..=limit {
            if port >= valid {
                if bucket_index(port) >= self.buckets.len() {
                    break;
                }
                return Ok(FreePort {
                    port: Port(port),
                    channel: None,
                    first_new_bucket: Some(bucket_index(port)),
                    is_lowest: !skipped_busy,
                });
            }
            let channel = self.channel(Port(port)).ok_or(Errno::ENOSPC)?;
            if channel.kind_under_event_lock().0 == ChannelKind::Free {
                if is_busy(Port(port)) {
                    skipped_busy = true;
                    continue;
                }
                return Ok(FreePort {
                    port: Port(port),
                    channel: Some(channel),
                    first_new_bucket: None,
                    is_lowest: !skipped_busy,
                });
            }
        }
        Err(Errno::ENOSPC)
    }

    /// [`PortTable::find_free`] within bucket 0 only, for the common
    /// allocation (2-level, no port busy): the lowest free port from the
    /// scan start up to `limit`, if there is one below 64. Bucket 0 is
    /// inline and always valid, so neither `valid_evtchns` nor storage is
    /// looked at; `None` sends the caller to the full scan. The caller
    /// holds the domain's event lock (states read from the summary words).
    #[inline]
    pub(crate) fn find_free_in_first_bucket(&self, limit: u32) -> Option<(Port, &Channel)> {
        let end = limit.min(EVTCHNS_PER_BUCKET - 1);
        for port in self.scan_start.load(Ordering::Relaxed)..end.saturating_add(1) {
            let channel = self.first.get(port as usize)?;
            if channel.is_free_under_event_lock() {
                return Some((Port(port), channel));
            }
        }
        None
    }

    /// Claim a port [`PortTable::find_free_in_first_bucket`] found: every
    /// port below it is taken, so the next scan starts after it. The
    /// caller holds the event lock.
    #[inline]
    pub(crate) fn claim_lowest(&self, port: Port) {
        self.scan_start
            .store(port.0.saturating_add(1), Ordering::Relaxed);
    }

    /// Xen's `evtchn_allocate_port()` for one given port (static event
    /// channels): -ENOSPC past `limit` or the table, -EBUSY if allocated
    /// (port 0 included) or busy. Storage up to the port may be missing.
    pub(crate) fn find_exact(
        &self,
        port: Port,
        limit: u32,
        is_busy: impl Fn(Port) -> bool,
    ) -> Result<FreePort<'_>, Errno> {
        if port.0 > limit || bucket_index(port.0) >= self.buckets.len() {
            return Err(Errno::ENOSPC);
        }
        let valid = self.valid_evtchns();
        if port.0 >= valid {
            return Ok(FreePort {
                port,
                channel: None,
                first_new_bucket: Some(bucket_index(valid)),
                is_lowest: false,
            });
        }
        let channel = self.channel(port).ok_or(Errno::ENOSPC)?;
        if channel.kind_under_event_lock().0 != ChannelKind::Free || is_busy(port) {
            return Err(Errno::EBUSY);
        }
        Ok(FreePort {
            port,
            channel: Some(channel),
            first_new_bucket: None,
            is_lowest: false,
        })
    }

    /// Allocate the storage a free port needs (-ENOMEM), changing nothing.
    #[inline]
    pub(crate) fn prepare<'table>(
        &self,
        free: FreePort<'table>,
    ) -> Result<PreparedPort<'table>, Errno> {
        let new_buckets = match free.first_new_bucket {
            None => None,
            Some(first) => Some((first, new_buckets(first, bucket_index(free.port.0))?)),
        };
        Ok(PreparedPort {
            port: free.port,
            channel: free.channel,
            new_buckets,
            is_lowest: free.is_lowest,
        })
    }

    /// Publish a prepared port's storage and return its channel (still
    /// free). Cannot fail: the slots exist and are empty because the event
    /// lock has been held since the port was found.
    #[inline]
    pub(crate) fn publish<'table>(
        &'table self,
        prepared: PreparedPort<'table>,
    ) -> Option<&'table Channel> {
        if let Some((first, buckets)) = prepared.new_buckets {
            self.publish_buckets(first, buckets);
        }
        let next = prepared.port.0.saturating_add(1);
        if prepared.is_lowest {
            self.scan_start.store(next, Ordering::Relaxed);
        } else {
            // A port claimed out of order extends the taken prefix only if
            // it is the first port past it.
            let _ = self.scan_start.compare_exchange(
                prepared.port.0,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        prepared.channel.or_else(|| self.channel(prepared.port))
    }

    /// A port became free: the next scan must look at it again. The caller
    /// holds the event lock.
    #[inline]
    pub(crate) fn note_freed(&self, port: Port) {
        // Only the event lock's holder writes `scan_start`, so a plain load
        // and store (no locked fetch_min) cannot lose an update.
        let port = port.0.max(1);
        if port < self.scan_start.load(Ordering::Relaxed) {
            self.scan_start.store(port, Ordering::Relaxed);
        }
    }

    /// Publish new buckets from index `first` up, in ascending order, so
    /// that the valid count never covers a missing bucket.
    #[cold]
    #[inline(never)]
    fn publish_buckets(&self, first: usize, buckets: Vec<Bucket>) {
        for (index, bucket) in (first..).zip(buckets) {
            self.publish_bucket(index, bucket);
        }
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
            *table
                .channel(Port(port))
                .unwrap()
                .write_as(crate::abi::DomId(1), true) = ChannelState::Ipi;
        }
        let free = table.find_free(1023, |_| false).unwrap();
        assert_eq!(free.port, Port(64));
        let prepared = table.prepare(free).unwrap();
        assert_eq!(table.valid_evtchns(), 64, "not yet published");
        drop(prepared);
        assert_eq!(table.valid_evtchns(), 64);
        let prepared = table
            .prepare(table.find_free(1023, |_| false).unwrap())
            .unwrap();
        assert!(table.publish(prepared).is_some());
        assert_eq!(table.valid_evtchns(), 128);
    }

    #[test]
    fn sender_finds_a_port_only_in_published_storage() {
        // 5000 ports: bucket slots on both sides of the 2-level range.
        let table = PortTable::new(4999).unwrap();
        for port in [64, 4095, 4096, 4999, 5056, u32::MAX] {
            assert!(table.channel_for_send(Port(port)).is_none(), "port {port}");
        }
        for bucket in 1..=(4999 / EVTCHNS_PER_BUCKET) as usize {
            table.publish_bucket(bucket, new_bucket().unwrap());
        }
        // The last bucket (4992..=5055) is whole; nothing past it exists.
        for port in [1, 64, 4095, 4096, 4999, 5055] {
            assert!(table.channel_for_send(Port(port)).is_some(), "port {port}");
            assert!(table.channel(Port(port)).is_some(), "port {port}");
        }
        for port in [5056, 5119, u32::MAX] {
            assert!(table.channel_for_send(Port(port)).is_none(), "port {port}");
        }
    }

    #[test]
    fn a_two_level_slot_past_the_slot_count_is_never_filled() {
        // Max port 100: two bucket slots (ports 0..=127), the other 62
        // slots of the 2-level range exist inline but are past the count,
        // and a sender does not compare with the count
        // (`BucketSlots::get_for_send`): they must stay empty.
        let table = PortTable::new(100).unwrap();
        for bucket in 1..TWO_LEVEL_SLOTS {
            table.publish_bucket(bucket, new_bucket().unwrap());
        }
        assert_eq!(table.valid_evtchns(), 128);
        for port in [64, 127] {
            assert!(table.channel_for_send(Port(port)).is_some(), "port {port}");
        }
        for port in [128, 200, 4095, 4096, u32::MAX] {
            assert!(table.channel_for_send(Port(port)).is_none(), "port {port}");
            assert!(table.channel(Port(port)).is_none(), "port {port}");
        }
        // Nor does allocation reach them, with any limit.
        assert_eq!(
            table.find_exact(Port(200), 4095, |_| false).err(),
            Some(Errno::ENOSPC)
        );
    }

    #[test]
    fn find_free_respects_the_limit_and_the_slot_count() {
        let table = PortTable::new(10).unwrap();
        for port in 1..=10 {
            *table
                .channel(Port(port))
                .unwrap()
                .write_as(crate::abi::DomId(1), true) = ChannelState::Ipi;
        }
        assert_eq!(table.find_free(10, |_| false).err(), Some(Errno::ENOSPC));
        // A larger limit than the table was built for still stops at the
        // storage the table can have (one bucket for max port 10).
        assert_eq!(
            table.find_free(200, |_| false).map(|free| free.port),
            Ok(Port(11))
        );
        for port in 11..64 {
            *table
                .channel(Port(port))
                .unwrap()
                .write_as(crate::abi::DomId(1), true) = ChannelState::Ipi;
        }
        assert_eq!(table.find_free(200, |_| false).err(), Some(Errno::ENOSPC));
    }
}
