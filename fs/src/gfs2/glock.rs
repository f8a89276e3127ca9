//! Glocks: the cluster locks of gfs2, as one node keeps them.
//!
//! A glock is named by a lock type and a number ([`GlockName`]; an inode's glock by the
//! inode's block address) and is in one of four [`LockState`]s in the cluster: `UN`
//! (unlocked), `SH` (shared: may read and cache), `DF` (deferred: direct I/O, no caching) or
//! `EX` (exclusive: may write). Local users take [`Holder`]s of a glock; holders queue in the
//! order they asked and are granted in that order when the glock's state allows theirs and
//! every granted holder is compatible (SH with SH, DF with DF, EX with nothing). When the
//! state must change, the first waiting holder asks the [`LockModule`]: [`Nolock`] grants at
//! once (a single machine); [`SimCluster`] plays a cluster in which a test can act as
//! another node.
//!
//! Around the state changes the [`GlockOps`] of the object keep its cached data valid:
//!
//! - **promotion**: before the first holder is granted after the glock came (back) into a
//!   state, `go_lock` re-reads what the lock protects (for an inode: the dinode, its size and
//!   pointers);
//! - **demotion** from SH or EX to a state that may not cache: once the last holder left,
//!   `go_inval` drops the cached pages of the inode and marks its size stale, and only then
//!   does the lock module hear that the state dropped.
//!
//! A demote comes from the cluster ([`GlockManager::request_demote`], which the lock module
//! calls when another node asks for a conflicting state): new holders wait, the granted ones
//! finish, and whichever thread releases the last of them (or the callback itself, when
//! there are none) runs the demote.
//!
//! | path | takes | what it may do |
//! | --- | --- | --- |
//! | [`GlockManager::acquire`] | the glock's spinlock, then waits spinning | grant; or, as the glock's only *busy* thread, call the lock module / `go_lock` with no spinlock held |
//! | [`Holder`] dropped | the glock's spinlock | run a pending demote if it was the last holder |
//! | [`GlockManager::request_demote`] | the glock's spinlock | mark the demote pending; run it at once if no holder is granted |
//! | running a demote | busy flag, no spinlock | `go_inval`, then the lock module's demote |
//!
//! | flag | meaning | Linux |
//! | --- | --- | --- |
//! | busy | one thread is changing the state or running `go_lock`/`go_inval`; nobody else starts to | `GLF_LOCK` |
//! | demote pending | the cluster asked this node to drop to a state; no new holder is granted until it has | `GLF_PENDING_DEMOTE` |
//! | instantiated | `go_lock` ran since the last `go_inval`; cleared, the next grant runs `go_lock` first | `GLF_INSTANTIATE_NEEDED` (inverted) |
//!
//! **Invariant:** the granted holders of a glock are pairwise compatible and allowed by its
//! state; `go_inval` runs only while no holder is granted; no holder is granted while a
//! demote is pending or before `go_lock` succeeded. Together with the page cache's invariant
//! (see [`crate::pagecache`]) this is what lets a gfs2 read skip the glock when its pages are
//! cached.
//!
//! # Limitations
//!
//! - Waiting holders spin (the kernel has no scheduler to sleep on): a holder kept for long
//!   costs the waiters their CPU.
//! - Glocks are never freed: the manager keeps one for every name ever locked.
//! - A node asking for a state waits as long as the other node keeps a conflicting one;
//!   there is no timeout ([`SimCluster::shut_down`] ends the waits of a test).
//! - No `try` locks, no priority holders, no minimum hold time: a node that is asked to
//!   demote gives the glock up as soon as its holders leave.

mod lock_module;

pub use lock_module::{DemoteHandler, LockError, LockModule, NodeId, Nolock, SimCluster, SimNode};

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;

use crate::sync::{AtomicU64, Mutex, Ordering, relax};

/// What a glock protects: Linux's `LM_TYPE_*` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LockType {
    /// The transaction lock.
    Trans = 1,
    /// An inode: its dinode, data and size.
    Inode = 2,
    /// A resource group.
    Rgrp = 3,
    /// The superblock and other filesystem-wide metadata.
    Meta = 4,
    /// Whether an inode is open on some node.
    Iopen = 5,
    /// `flock` locks.
    Flock = 6,
    /// POSIX locks.
    Plock = 7,
    /// Quota data.
    Quota = 8,
    /// A journal.
    Journal = 9,
}

/// Names one glock in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GlockName {
    /// What it protects.
    pub lock_type: LockType,
    /// Which one: for an inode, its block address.
    pub number: u64,
}

impl GlockName {
    /// The glock of the inode at block `addr`.
    pub fn inode(addr: u64) -> Self {
        Self {
            lock_type: LockType::Inode,
            number: addr,
        }
    }
}

/// The state of a glock in the cluster, or the state a holder asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LockState {
    /// `UN`: not held.
    Unlocked,
    /// `SH`: shared; may read and cache.
    Shared,
    /// `DF`: deferred; shared among direct-I/O users, no caching.
    Deferred,
    /// `EX`: exclusive; may write.
    Exclusive,
}

impl LockState {
    /// Whether two nodes (or two holders) may hold these states at once.
    pub fn compatible_with(self, other: Self) -> bool {
        matches!(
            (self, other),
            (Self::Unlocked, _)
                | (_, Self::Unlocked)
                | (Self::Shared, Self::Shared)
                | (Self::Deferred, Self::Deferred)
        )
    }

    /// Whether a glock in this state may grant a holder that wants `wanted`: the same state,
    /// or SH under EX.
    pub fn grants(self, wanted: Self) -> bool {
        self == wanted || (self == Self::Exclusive && wanted == Self::Shared)
    }

    /// Whether data may be cached in this state (SH and EX).
    pub fn caches(self) -> bool {
        matches!(self, Self::Shared | Self::Exclusive)
    }

    /// The highest state this node may keep while another holds `other`.
    pub fn highest_compatible(other: Self) -> Self {
        match other {
            Self::Unlocked => Self::Exclusive,
            Self::Shared => Self::Shared,
            Self::Deferred => Self::Deferred,
            Self::Exclusive => Self::Unlocked,
        }
    }
}

/// What a glock's object does when the glock changes state.
pub trait GlockOps {
    /// Why re-reading the object failed.
    type Error;

    /// The glock came into `state` (from one in which the object's data was not valid):
    /// re-read the object. Runs before any holder is granted.
    fn go_lock(&self, name: GlockName, state: LockState) -> Result<(), Self::Error>;

    /// The glock leaves a state that allowed caching: drop the cached data and mark what is
    /// kept (the size) stale. Runs with no holder granted. Returns the pages dropped.
    fn go_inval(&self, name: GlockName) -> usize;
}

/// Why a holder was not granted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GlockError<E> {
    /// A holder must ask for SH, DF or EX.
    #[error("a holder cannot ask for the unlocked state")]
    UnlockedRequest,
    /// The lock module did not grant the state.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `go_lock` failed to re-read the object.
    #[error("re-reading the locked object failed: {0}")]
    GoLock(#[source] E),
}

/// What the glocks of a manager did, counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GlockStats {
    /// Holders granted in SH.
    pub shared: u64,
    /// Holders granted in DF.
    pub deferred: u64,
    /// Holders granted in EX.
    pub exclusive: u64,
    /// State changes asked of the lock module by local holders.
    pub cluster_requests: u64,
    /// `go_lock` calls that succeeded.
    pub go_locks: u64,
    /// Demotes run at the cluster's request.
    pub demotes: u64,
    /// Pages `go_inval` dropped.
    pub pages_invalidated: u64,
}

impl GlockStats {
    /// Holders granted, in any state.
    pub fn acquisitions(&self) -> u64 {
        self.shared + self.deferred + self.exclusive
    }
}

#[derive(Debug, Default)]
struct Counters {
    shared: AtomicU64,
    deferred: AtomicU64,
    exclusive: AtomicU64,
    cluster_requests: AtomicU64,
    go_locks: AtomicU64,
    demotes: AtomicU64,
    pages_invalidated: AtomicU64,
}

fn count(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// One holder in a glock's queue.
#[derive(Clone, Copy, Debug)]
struct HolderEntry {
    id: u64,
    state: LockState,
    granted: bool,
}

#[derive(Debug)]
struct GlockInner {
    /// The state this node holds in the cluster.
    state: LockState,
    /// Holders in the order they asked: granted or waiting.
    holders: VecDeque<HolderEntry>,
    /// A thread is changing the state or running `go_lock`/`go_inval`.
    busy: bool,
    /// The cluster asked this node to drop to this state.
    demote: Option<LockState>,
    /// `go_lock` ran since the last `go_inval`.
    instantiated: bool,
    next_holder: u64,
}

impl GlockInner {
    fn has_granted(&self) -> bool {
        self.holders.iter().any(|holder| holder.granted)
    }

    /// If a demote is pending and may run now, claims the glock for it: `(from, to)`.
    fn claim_demote(&mut self) -> Option<(LockState, LockState)> {
        let to = self.demote?;
        if self.busy || self.has_granted() {
            return None;
        }
        self.busy = true;
        Some((self.state, to))
    }
}

/// One glock of this node.
#[derive(Debug)]
struct Glock {
    name: GlockName,
    inner: Mutex<GlockInner>,
}

/// What a waiting holder does next.
enum Step {
    Granted,
    Wait,
    Demote { from: LockState, to: LockState },
    Convert { from: LockState, to: LockState },
    GoLock(LockState),
}

/// The glocks of one node, over a lock module.
pub struct GlockManager<L: LockModule> {
    lock_module: L,
    glocks: Mutex<BTreeMap<GlockName, Arc<Glock>>>,
    counters: Counters,
}

impl<L: LockModule> GlockManager<L> {
    /// A manager with no glocks, asking `lock_module` for states.
    pub fn new(lock_module: L) -> Self {
        Self {
            lock_module,
            glocks: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    /// The lock module.
    pub fn lock_module(&self) -> &L {
        &self.lock_module
    }

    /// The counters.
    pub fn stats(&self) -> GlockStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        GlockStats {
            shared: load(&counters.shared),
            deferred: load(&counters.deferred),
            exclusive: load(&counters.exclusive),
            cluster_requests: load(&counters.cluster_requests),
            go_locks: load(&counters.go_locks),
            demotes: load(&counters.demotes),
            pages_invalidated: load(&counters.pages_invalidated),
        }
    }

    /// The state this node holds `name` in (UN for a glock never locked).
    pub fn state(&self, name: GlockName) -> LockState {
        self.find(name)
            .map_or(LockState::Unlocked, |glock| glock.inner.lock().state)
    }

    fn find(&self, name: GlockName) -> Option<Arc<Glock>> {
        self.glocks.lock().get(&name).cloned()
    }

    fn glock(&self, name: GlockName) -> Arc<Glock> {
        let mut glocks = self.glocks.lock();
        let glock = glocks.entry(name).or_insert_with(|| {
            Arc::new(Glock {
                name,
                inner: Mutex::new(GlockInner {
                    state: LockState::Unlocked,
                    holders: VecDeque::new(),
                    busy: false,
                    demote: None,
                    instantiated: false,
                    next_holder: 0,
                }),
            })
        });
        Arc::clone(glock)
    }

    /// Takes a holder of `name` in `state`, waiting for earlier holders, incompatible ones
    /// and a pending demote; changes the cluster state and runs `go_lock` when needed.
    pub fn acquire<'a, O: GlockOps>(
        &'a self,
        name: GlockName,
        state: LockState,
        ops: &'a O,
    ) -> Result<Holder<'a, L, O>, GlockError<O::Error>> {
        if state == LockState::Unlocked {
            return Err(GlockError::UnlockedRequest);
        }
        let glock = self.glock(name);
        let id = {
            let mut inner = glock.inner.lock();
            let id = inner.next_holder;
            inner.next_holder += 1;
            inner.holders.push_back(HolderEntry {
                id,
                state,
                granted: false,
            });
            id
        };

        loop {
            let step = Self::next_step(&mut glock.inner.lock(), id);
            match step {
                Step::Granted => break,
                Step::Wait => relax(),
                Step::Demote { from, to } => self.demote(&glock, from, to, ops),
                Step::Convert { from, to } => {
                    if let Err(error) = self.convert(&glock, from, to, ops) {
                        self.give_up(&glock, id, ops);
                        return Err(error.into());
                    }
                }
                Step::GoLock(state) => {
                    let result = ops.go_lock(name, state);
                    let failed = result.is_err();
                    {
                        let mut inner = glock.inner.lock();
                        inner.busy = false;
                        inner.instantiated = !failed;
                    }
                    if let Err(error) = result {
                        self.give_up(&glock, id, ops);
                        return Err(GlockError::GoLock(error));
                    }
                    count(&self.counters.go_locks, 1);
                }
            }
        }

        count(
            match state {
                LockState::Shared => &self.counters.shared,
                LockState::Deferred => &self.counters.deferred,
                _ => &self.counters.exclusive,
            },
            1,
        );
        Ok(Holder {
            manager: self,
            glock,
            id,
            state,
            ops,
        })
    }

    /// Decides what waiting holder `id` does next; claims the glock (busy) for any work.
    fn next_step(inner: &mut GlockInner, id: u64) -> Step {
        if inner.busy {
            return Step::Wait;
        }
        if inner.demote.is_some() {
            return match inner.claim_demote() {
                Some((from, to)) => Step::Demote { from, to },
                None => Step::Wait,
            };
        }

        // In order: nobody overtakes a holder that waits.
        let Some(position) = inner.holders.iter().position(|holder| holder.id == id) else {
            return Step::Wait;
        };
        if inner.holders.iter().take(position).any(|h| !h.granted) {
            return Step::Wait;
        }
        let wanted = inner.holders[position].state;
        let compatible = inner
            .holders
            .iter()
            .filter(|holder| holder.granted)
            .all(|holder| holder.state.compatible_with(wanted));

        if inner.state.grants(wanted) {
            if !compatible {
                return Step::Wait;
            }
            if !inner.instantiated {
                inner.busy = true;
                return Step::GoLock(inner.state);
            }
            inner.holders[position].granted = true;
            return Step::Granted;
        }
        if inner.has_granted() {
            return Step::Wait;
        }
        inner.busy = true;
        Step::Convert {
            from: inner.state,
            to: wanted,
        }
    }

    /// Changes the cluster state for a holder, as the glock's busy thread.
    fn convert<O: GlockOps>(
        &self,
        glock: &Glock,
        from: LockState,
        to: LockState,
        ops: &O,
    ) -> Result<(), LockError> {
        if from.caches() && !to.caches() {
            self.invalidate(glock, ops);
        }

        let result = self.lock_module.lock(glock.name, from, to);
        count(&self.counters.cluster_requests, 1);
        let mut inner = glock.inner.lock();
        inner.busy = false;
        if result.is_ok() {
            inner.state = to;
            if !from.caches() {
                // What was read in UN or DF may not be cached: read it again.
                inner.instantiated = false;
            }
        } else if from.caches() && !to.caches() {
            // The pages are gone: the state that is kept may not cache any more.
            inner.instantiated = false;
        }
        result
    }

    /// Runs a demote the cluster asked for, as the glock's busy thread.
    fn demote<O: GlockOps>(&self, glock: &Glock, from: LockState, to: LockState, ops: &O) {
        if from == LockState::Unlocked || from == to {
            // Nothing held conflicts any more (a state change failed since it was asked).
            let mut inner = glock.inner.lock();
            inner.demote = None;
            inner.busy = false;
            return;
        }
        if from.caches() && !to.caches() {
            self.invalidate(glock, ops);
        }
        self.lock_module.demote(glock.name, from, to);

        let mut inner = glock.inner.lock();
        inner.state = to;
        if inner.demote == Some(to) {
            inner.demote = None;
        }
        inner.busy = false;
        drop(inner);

        count(&self.counters.demotes, 1);
        #[cfg(feature = "defmt")]
        defmt::debug!("glock {}: demoted from {} to {}", glock.name, from, to);
    }

    /// Runs `go_inval`, as the glock's busy thread with no holder granted.
    fn invalidate<O: GlockOps>(&self, glock: &Glock, ops: &O) {
        let pages = ops.go_inval(glock.name);
        glock.inner.lock().instantiated = false;
        count(&self.counters.pages_invalidated, pages as u64);
    }

    /// Removes holder `id`, granted or not, and runs a demote this allowed.
    fn give_up<O: GlockOps>(&self, glock: &Glock, id: u64, ops: &O) {
        let claim = {
            let mut inner = glock.inner.lock();
            inner.holders.retain(|holder| holder.id != id);
            inner.claim_demote()
        };
        if let Some((from, to)) = claim {
            self.demote(glock, from, to, ops);
        }
    }

    /// The cluster asks this node to hold `name` in `to` at most (the lock module calls this
    /// when another node wants a conflicting state). Runs the demote now if no holder is
    /// granted; otherwise the last holder to leave runs it.
    pub fn request_demote<O: GlockOps>(&self, name: GlockName, to: LockState, ops: &O) {
        let Some(glock) = self.find(name) else {
            return;
        };
        let claim = {
            let mut inner = glock.inner.lock();
            let keeps = inner.state == LockState::Unlocked || inner.state == to;
            if keeps && !inner.busy {
                return;
            }
            // Two different targets: only unlocking satisfies both.
            inner.demote = Some(match inner.demote {
                Some(pending) if pending != to => LockState::Unlocked,
                _ => to,
            });
            inner.claim_demote()
        };

        if let Some((from, to)) = claim {
            self.demote(&glock, from, to, ops);
        }
    }
}

impl<L: LockModule> core::fmt::Debug for GlockManager<L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GlockManager")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A granted holder of a glock; dropping it releases it.
pub struct Holder<'a, L: LockModule, O: GlockOps> {
    manager: &'a GlockManager<L>,
    glock: Arc<Glock>,
    id: u64,
    state: LockState,
    ops: &'a O,
}

impl<L: LockModule, O: GlockOps> Holder<'_, L, O> {
    /// The glock held.
    pub fn name(&self) -> GlockName {
        self.glock.name
    }

    /// The state it was granted in.
    pub fn state(&self) -> LockState {
        self.state
    }
}

impl<L: LockModule, O: GlockOps> Drop for Holder<'_, L, O> {
    fn drop(&mut self) {
        self.manager.give_up(&self.glock, self.id, self.ops);
    }
}

impl<L: LockModule, O: GlockOps> core::fmt::Debug for Holder<'_, L, O> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Holder")
            .field("name", &self.glock.name)
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_models;
#[cfg(all(test, not(loom)))]
mod tests;
