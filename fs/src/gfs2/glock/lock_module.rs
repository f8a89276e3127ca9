//! Lock modules: how a node's glocks get their states from the cluster.
//!
//! A [`LockModule`] grants a node the state it asks for on a glock, waiting until no other
//! node holds a conflicting one, and hears when the node drops a state. When another node
//! asks for a conflicting state, the module calls the node's [`DemoteHandler`], which in gfs2
//! is the mount: it asks its [`GlockManager`](super::GlockManager) to demote.
//!
//! - [`Nolock`] is a cluster of one (gfs2's `lock_nolock`): every request is granted at once
//!   and no demote ever comes.
//! - [`SimCluster`] keeps the states of several simulated nodes in memory. A node's
//!   [`SimNode`] is its lock module; a test can also drive a [`SimNode`] by hand to act as
//!   another machine: ask for EX (this sends the other nodes their demote callbacks and waits
//!   until they have dropped their states), write to the shared disk, and release.
//!
//! Requests on one glock are granted in the order they were made: a node waiting for EX is
//! not overtaken by a later SH request of another node, so a demoted node cannot take its
//! lock straight back and starve the other. Conversions (a node that holds a state asks for
//! another) go first, as in a DLM: the requests queued behind them may be waiting for that
//! very node to drop its state.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use super::{GlockName, LockState};
use crate::sync::{Mutex, relax};

/// Why the lock module did not grant a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LockError {
    /// The cluster was shut down while the request waited, or before it was made.
    #[error("the cluster lock module is shut down")]
    ShutDown,
}

/// The cluster side of a node's glocks.
pub trait LockModule: Send + Sync {
    /// Changes this node's state of `name` from `from` to `to`; returns once it is granted.
    fn lock(&self, name: GlockName, from: LockState, to: LockState) -> Result<(), LockError>;

    /// This node dropped its state of `name` from `from` to `to` (a demote, after its
    /// holders left and its cached data was dropped).
    fn demote(&self, name: GlockName, from: LockState, to: LockState);

    /// Sets who hears when other nodes want a conflicting state. By default nobody: a
    /// module with no other nodes never calls.
    fn attach(&self, handler: Weak<dyn DemoteHandler>) {
        let _ = handler;
    }
}

/// Hears the cluster ask this node to give up a state.
pub trait DemoteHandler: Send + Sync {
    /// Another node wants `name` in a state with which this node may keep `to` at most.
    fn demote_requested(&self, name: GlockName, to: LockState);
}

/// The lock module of a filesystem used by one machine only: grants everything at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Nolock;

impl LockModule for Nolock {
    fn lock(&self, _name: GlockName, _from: LockState, _to: LockState) -> Result<(), LockError> {
        Ok(())
    }

    fn demote(&self, _name: GlockName, _from: LockState, _to: LockState) {}
}

/// A node of a [`SimCluster`].
pub type NodeId = u32;

#[derive(Default)]
struct ClusterState {
    /// The states the nodes hold, by glock; UN is not recorded.
    granted: BTreeMap<GlockName, BTreeMap<NodeId, LockState>>,
    /// Requests not yet granted, in order: (ticket, node, glock, state).
    waiting: Vec<(u64, NodeId, GlockName, LockState)>,
    next_ticket: u64,
    handlers: BTreeMap<NodeId, Weak<dyn DemoteHandler>>,
    shut_down: bool,
}

/// A cluster of simulated nodes whose lock states live in memory.
pub struct SimCluster {
    state: Mutex<ClusterState>,
}

impl Default for SimCluster {
    fn default() -> Self {
        Self {
            state: Mutex::new(ClusterState::default()),
        }
    }
}

impl SimCluster {
    /// A cluster with no locks held.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The lock module of node `id`.
    pub fn node(self: &Arc<Self>, id: NodeId) -> SimNode {
        SimNode {
            cluster: Arc::clone(self),
            id,
        }
    }

    /// The state node `id` holds `name` in.
    pub fn state_of(&self, id: NodeId, name: GlockName) -> LockState {
        let state = self.state.lock();
        state
            .granted
            .get(&name)
            .and_then(|nodes| nodes.get(&id))
            .copied()
            .unwrap_or(LockState::Unlocked)
    }

    /// Fails every waiting and later request with [`LockError::ShutDown`].
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
    }
}

impl core::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimCluster")
            .field("granted", &state.granted)
            .field("waiting", &state.waiting.len())
            .finish_non_exhaustive()
    }
}

/// One node's lock module in a [`SimCluster`]; a test may also drive it by hand.
#[derive(Clone)]
pub struct SimNode {
    cluster: Arc<SimCluster>,
    id: NodeId,
}

impl SimNode {
    /// The node's number.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<SimCluster> {
        &self.cluster
    }
}

impl core::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNode").field("id", &self.id).finish()
    }
}

impl LockModule for SimNode {
    fn lock(&self, name: GlockName, _from: LockState, to: LockState) -> Result<(), LockError> {
        let ticket = {
            let mut state = self.cluster.state.lock();
            if state.shut_down {
                return Err(LockError::ShutDown);
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push((ticket, self.id, name, to));
            ticket
        };

        loop {
            let to_notify: Vec<Arc<dyn DemoteHandler>> = {
                let mut state = self.cluster.state.lock();
                if state.shut_down {
                    state.waiting.retain(|waiting| waiting.0 != ticket);
                    return Err(LockError::ShutDown);
                }

                let holders = state.granted.get(&name);
                let conflicting: Vec<NodeId> = holders
                    .into_iter()
                    .flatten()
                    .filter(|&(&node, &held)| node != self.id && !held.compatible_with(to))
                    .map(|(&node, _)| node)
                    .collect();
                // Earlier requests of other nodes that conflict go first, except before a
                // conversion: a node that holds a state and waits behind a request that waits
                // for it to drop that state would wait forever (a DLM grants conversions
                // first for the same reason).
                let converting = holders.is_some_and(|nodes| nodes.contains_key(&self.id));
                let overtakes = !converting
                    && state.waiting.iter().any(|&(other, node, wanted, state)| {
                        other < ticket
                            && node != self.id
                            && wanted == name
                            && !state.compatible_with(to)
                    });

                if conflicting.is_empty() && !overtakes {
                    state.waiting.retain(|waiting| waiting.0 != ticket);
                    let nodes = state.granted.entry(name).or_default();
                    if to == LockState::Unlocked {
                        nodes.remove(&self.id);
                    } else {
                        nodes.insert(self.id, to);
                    }
                    return Ok(());
                }
                conflicting
                    .iter()
                    .filter_map(|node| state.handlers.get(node)?.upgrade())
                    .collect()
            };

            // Outside the cluster's lock: a handler may demote at once, which calls back in.
            // Asked again on every turn: a node may have taken the lock again since.
            let keep = LockState::highest_compatible(to);
            for handler in to_notify {
                handler.demote_requested(name, keep);
            }
            relax();
        }
    }

    fn demote(&self, name: GlockName, _from: LockState, to: LockState) {
        let mut state = self.cluster.state.lock();
        let nodes = state.granted.entry(name).or_default();
        if to == LockState::Unlocked {
            nodes.remove(&self.id);
        } else {
            nodes.insert(self.id, to);
        }
    }

    fn attach(&self, handler: Weak<dyn DemoteHandler>) {
        self.cluster.state.lock().handlers.insert(self.id, handler);
    }
}
