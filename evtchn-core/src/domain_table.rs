//! The id → domain map behind [`crate::Domains`], built so that looking a
//! domain up never waits on another domain.
//!
//! One slot per possible domid (below DOMID_FIRST_RESERVED), in groups of
//! 256 allocated on first use. A slot is a reader-writer lock around an
//! optional `Arc<Domain>`: lookups take its read lock for the time of an
//! `Arc` clone; only creating or destroying *that* domain writes it. So an
//! interrupt-context lookup that only *tries* the read lock fails only while
//! the very domain it wants is being created or destroyed — when dropping
//! its event is right anyway.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::abi::{DomId, Errno};
use crate::domain::Domain;
use crate::sync::{OnceSlot, RwLock};

const SLOTS_PER_GROUP: usize = 256;
const GROUP_COUNT: usize = (DomId::FIRST_RESERVED.0 as usize).div_ceil(SLOTS_PER_GROUP);

type Slot = RwLock<Option<Arc<Domain>>>;

pub(crate) struct DomainTable {
    groups: Box<[OnceSlot<Box<[Slot]>>]>,
}

fn new_group() -> Result<Box<[Slot]>, Errno> {
    let mut slots = Vec::new();
    slots
        .try_reserve_exact(SLOTS_PER_GROUP)
        .map_err(|_| Errno::ENOMEM)?;
    slots.extend((0..SLOTS_PER_GROUP).map(|_| RwLock::new(None)));
    Ok(slots.into_boxed_slice())
}

impl DomainTable {
    pub(crate) fn new() -> Self {
        Self {
            groups: (0..GROUP_COUNT).map(|_| OnceSlot::new()).collect(),
        }
    }

    /// The slot of a real domid whose group exists.
    fn slot(&self, domid: DomId) -> Option<&Slot> {
        if !domid.is_real() {
            return None;
        }
        let index = usize::from(domid.0);
        let group = self.groups.get(index / SLOTS_PER_GROUP)?.get()?;
        group.get(index % SLOTS_PER_GROUP)
    }

    /// The slot of a real domid, creating its group if needed.
    fn slot_or_create(&self, domid: DomId) -> Result<&Slot, Errno> {
        if !domid.is_real() {
            return Err(Errno::EINVAL);
        }
        let index = usize::from(domid.0);
        let once = self
            .groups
            .get(index / SLOTS_PER_GROUP)
            .ok_or(Errno::EINVAL)?;
        let group = match once.get() {
            Some(group) => group,
            None => {
                // Allocated outside call_once so that failure is an errno; a
                // racing creator's group wins and ours is dropped.
                let fresh = new_group()?;
                once.call_once(|| fresh)
            }
        };
        group.get(index % SLOTS_PER_GROUP).ok_or(Errno::EINVAL)
    }

    /// Insert a new domain; -EEXIST if the id is taken.
    pub(crate) fn insert(&self, domid: DomId, domain: Arc<Domain>) -> Result<(), Errno> {
        let mut slot = self.slot_or_create(domid)?.write();
        if slot.is_some() {
            return Err(Errno::EEXIST);
        }
        *slot = Some(domain);
        Ok(())
    }

    /// Forget a domain.
    pub(crate) fn remove(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.slot(domid)?.write().take()
    }

    /// The domain with this id, waiting out a concurrent insert or remove
    /// of that same id.
    pub(crate) fn get(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.slot(domid)?.read().clone()
    }

    /// The same for interrupt context: `None` also while that domain is
    /// being inserted or removed.
    pub(crate) fn try_get(&self, domid: DomId) -> Option<Arc<Domain>> {
        self.slot(domid)?.try_read()?.clone()
    }

    /// Every domain id present, ascending.
    pub(crate) fn ids(&self) -> Vec<DomId> {
        let mut ids = Vec::new();
        for (group_index, group) in self.groups.iter().enumerate() {
            let Some(group) = group.get() else {
                continue;
            };
            for (slot_index, slot) in group.iter().enumerate() {
                if slot.read().is_some() {
                    let id = group_index * SLOTS_PER_GROUP + slot_index;
                    if let Ok(id) = u16::try_from(id) {
                        ids.push(DomId(id));
                    }
                }
            }
        }
        ids
    }
}
