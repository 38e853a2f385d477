//! Entry points through a [`DomainHandle`] for the ops a guest issues most
//! often after send: EVTCHNOP_unmask, EVTCHNOP_status, EVTCHNOP_close and
//! EVTCHNOP_alloc_unbound.
//! Each skips the registry lookup of the caller (its slot lock and `Arc`
//! reference) and otherwise serves the op exactly as the by-id method.
//! [`Domains::dispatch_from`] routes these ops here.

use crate::abi::{DomId, Errno, EvtchnStatus, Port};
use crate::notify::{Notify, PirqHost};
use crate::ops::CloseBy;
use crate::registry::{DomainHandle, Domains};

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// [`Domains::unmask`] for the domain behind `caller`, without the
    /// registry lookup. Same answers, except that a handle of a destroyed
    /// domain (every port closed) gets -EINVAL where the by-id call gets
    /// -ESRCH.
    #[inline]
    pub fn unmask_from(&self, caller: &DomainHandle, port: Port) -> Result<(), Errno> {
        self.unmask_on(caller.domain(), port)
    }

    /// [`Domains::close`] for the domain behind `caller`, without the
    /// registry lookup. Same answers, except that a handle of a destroyed
    /// domain (every port already closed) gets -EINVAL where the by-id call
    /// gets -ESRCH.
    #[inline]
    pub fn close_from(&self, caller: &DomainHandle, port: Port) -> Result<(), Errno> {
        self.close_port(caller.domain_arc(), port, CloseBy::Guest)
    }

    /// [`Domains::alloc_unbound`] for the domain behind `caller`, without
    /// the registry lookup of the caller (DOMID_SELF in `dom` needs none at
    /// all). Same answers, except that a handle of a destroyed domain gets
    /// the refusal of an allocation in a dying domain where the by-id call
    /// gets -ESRCH.
    #[inline]
    pub fn alloc_unbound_from(
        &self,
        caller: &DomainHandle,
        dom: DomId,
        remote_dom: DomId,
    ) -> Result<Port, Errno> {
        self.alloc_unbound_on(caller.domain_arc(), dom, remote_dom)
    }

    /// [`Domains::status`] for the domain behind `caller`: a query of
    /// DOMID_SELF needs no registry lookup at all, any other domain is
    /// looked up as the by-id call does. Same answers, except that a handle
    /// of a destroyed domain is not refused with -ESRCH.
    #[inline]
    pub fn status_from(
        &self,
        caller: &DomainHandle,
        query: EvtchnStatus,
    ) -> Result<EvtchnStatus, Errno> {
        let caller = caller.domain();
        let looked_up;
        let target = if query.dom == DomId::SELF {
            caller
        } else {
            if !query.dom.is_real() {
                return Err(Errno::ESRCH);
            }
            looked_up = self.domain(query.dom).ok_or(Errno::ESRCH)?;
            &looked_up
        };
        self.status_on(caller, target, query)
    }
}
