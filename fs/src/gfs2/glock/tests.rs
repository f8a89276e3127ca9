use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::*;

const NAME: GlockName = GlockName {
    lock_type: LockType::Inode,
    number: 1234,
};

/// Glock operations that count their calls and check that no holder is granted during
/// `go_inval`.
#[derive(Default)]
struct CountingOps {
    go_locks: AtomicUsize,
    go_invals: AtomicUsize,
    /// Holders between grant and release, kept by the tests.
    holding: AtomicUsize,
    fail_go_lock: AtomicBool,
}

#[derive(Debug, PartialEq, Eq)]
struct ReadFailed;

impl GlockOps for CountingOps {
    type Error = ReadFailed;

    fn go_lock(&self, _name: GlockName, _state: LockState) -> Result<(), ReadFailed> {
        if self.fail_go_lock.load(Ordering::SeqCst) {
            return Err(ReadFailed);
        }
        self.go_locks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn go_inval(&self, _name: GlockName) -> usize {
        assert_eq!(
            self.holding.load(Ordering::SeqCst),
            0,
            "go_inval under a holder"
        );
        self.go_invals.fetch_add(1, Ordering::SeqCst);
        7
    }
}

/// A node of a simulated cluster: its glocks and their operations.
struct Node {
    glocks: GlockManager<SimNode>,
    ops: CountingOps,
}

impl DemoteHandler for Node {
    fn demote_requested(&self, name: GlockName, to: LockState) {
        self.glocks.request_demote(name, to, &self.ops);
    }
}

fn node(cluster: &Arc<SimCluster>, id: NodeId) -> Arc<Node> {
    let node = Arc::new(Node {
        glocks: GlockManager::new(cluster.node(id)),
        ops: CountingOps::default(),
    });
    let handler: Arc<dyn DemoteHandler> = node.clone();
    node.glocks.lock_module().attach(Arc::downgrade(&handler));
    node
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

fn queue(glocks: &GlockManager<impl LockModule>) -> (usize, usize, bool) {
    let glock = glocks.find(NAME).unwrap();
    let inner = glock.inner.lock();
    let granted = inner.holders.iter().filter(|h| h.granted).count();
    (
        granted,
        inner.holders.len() - granted,
        inner.demote.is_some(),
    )
}

#[test]
fn nolock_grants_at_once_and_go_lock_runs_once_per_promotion() {
    let glocks = GlockManager::new(Nolock);
    let ops = CountingOps::default();

    let first = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();
    let second = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();
    assert_eq!(second.state(), LockState::Shared);
    drop((first, second));
    let third = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();
    drop(third);

    let stats = glocks.stats();
    assert_eq!(stats.shared, 3);
    assert_eq!(stats.acquisitions(), 3);
    assert_eq!(stats.cluster_requests, 1);
    assert_eq!(ops.go_locks.load(Ordering::SeqCst), 1);
    assert_eq!(glocks.state(NAME), LockState::Shared);
    assert_eq!(
        glocks.acquire(NAME, LockState::Unlocked, &ops).unwrap_err(),
        GlockError::UnlockedRequest
    );
}

#[test]
fn states_are_compatible_as_in_gfs2() {
    use LockState::*;

    for (a, b, compatible) in [
        (Shared, Shared, true),
        (Deferred, Deferred, true),
        (Shared, Deferred, false),
        (Exclusive, Shared, false),
        (Exclusive, Exclusive, false),
        (Unlocked, Exclusive, true),
    ] {
        assert_eq!(a.compatible_with(b), compatible, "{a:?} {b:?}");
        assert_eq!(b.compatible_with(a), compatible, "{b:?} {a:?}");
    }
    assert!(Exclusive.grants(Shared));
    assert!(!Shared.grants(Exclusive));
    assert!(!Exclusive.grants(Deferred));
}

#[test]
fn holders_are_granted_in_order_and_never_incompatible() {
    let glocks = GlockManager::new(Nolock);
    let ops = CountingOps::default();
    let order = AtomicUsize::new(0);
    let shared = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();

    std::thread::scope(|scope| {
        let exclusive = scope.spawn(|| {
            let holder = glocks.acquire(NAME, LockState::Exclusive, &ops).unwrap();
            order.fetch_add(1, Ordering::SeqCst)
                + 10 * usize::from(holder.state() == LockState::Exclusive)
        });
        wait_until("the EX holder queued", || queue(&glocks).1 == 1);
        let late_shared = scope.spawn(|| {
            let _holder = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();
            order.fetch_add(1, Ordering::SeqCst)
        });
        wait_until("the second SH holder queued", || queue(&glocks).1 == 2);

        // The later SH is compatible with the granted one but may not overtake EX.
        assert_eq!(queue(&glocks), (1, 2, false));
        assert_eq!(order.load(Ordering::SeqCst), 0);
        drop(shared);

        assert_eq!(exclusive.join().unwrap(), 10);
        assert_eq!(late_shared.join().unwrap(), 1);
    });
    let stats = glocks.stats();
    assert_eq!((stats.shared, stats.exclusive), (2, 1));
}

#[test]
fn a_demote_waits_for_holders_then_invalidates_and_lets_the_other_node_in() {
    let cluster = SimCluster::new();
    let local = node(&cluster, 1);
    let remote = cluster.node(2);

    let holder = local
        .glocks
        .acquire(NAME, LockState::Shared, &local.ops)
        .unwrap();
    local.ops.holding.fetch_add(1, Ordering::SeqCst);
    assert_eq!(cluster.state_of(1, NAME), LockState::Shared);

    std::thread::scope(|scope| {
        let other = scope.spawn(|| remote.lock(NAME, LockState::Unlocked, LockState::Exclusive));
        wait_until("the demote is pending", || queue(&local.glocks).2);

        assert_eq!(cluster.state_of(2, NAME), LockState::Unlocked);
        assert_eq!(local.ops.go_invals.load(Ordering::SeqCst), 0);
        local.ops.holding.fetch_sub(1, Ordering::SeqCst);
        drop(holder);

        other.join().unwrap().unwrap();
    });

    assert_eq!(cluster.state_of(1, NAME), LockState::Unlocked);
    assert_eq!(cluster.state_of(2, NAME), LockState::Exclusive);
    assert_eq!(local.glocks.state(NAME), LockState::Unlocked);
    assert_eq!(local.ops.go_invals.load(Ordering::SeqCst), 1);
    let stats = local.glocks.stats();
    assert_eq!((stats.demotes, stats.pages_invalidated), (1, 7));

    // Node 1 waits for node 2 to release, then re-reads the object.
    std::thread::scope(|scope| {
        let again = scope.spawn(|| {
            let holder = local.glocks.acquire(NAME, LockState::Shared, &local.ops);
            holder.map(|holder| holder.state()).unwrap()
        });
        wait_until("node 1 waits", || queue(&local.glocks).1 == 1);
        assert_eq!(local.ops.go_locks.load(Ordering::SeqCst), 1);
        remote.demote(NAME, LockState::Exclusive, LockState::Unlocked);
        assert_eq!(again.join().unwrap(), LockState::Shared);
    });
    assert_eq!(local.ops.go_locks.load(Ordering::SeqCst), 2);
    assert_eq!(local.glocks.stats().cluster_requests, 2);
}

#[test]
fn a_demote_with_no_holder_runs_in_the_callback() {
    let cluster = SimCluster::new();
    let local = node(&cluster, 1);
    drop(
        local
            .glocks
            .acquire(NAME, LockState::Exclusive, &local.ops)
            .unwrap(),
    );

    // Another node wants SH: this one may keep SH, so nothing is invalidated.
    cluster
        .node(2)
        .lock(NAME, LockState::Unlocked, LockState::Shared)
        .unwrap();

    assert_eq!(local.glocks.state(NAME), LockState::Shared);
    assert_eq!(local.ops.go_invals.load(Ordering::SeqCst), 0);
    assert_eq!(local.glocks.stats().demotes, 1);
    let holder = local
        .glocks
        .acquire(NAME, LockState::Shared, &local.ops)
        .unwrap();
    assert_eq!(holder.state(), LockState::Shared);
    assert_eq!(local.ops.go_locks.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failed_go_lock_fails_the_holder_and_is_retried_by_the_next() {
    let glocks = GlockManager::new(Nolock);
    let ops = CountingOps::default();
    ops.fail_go_lock.store(true, Ordering::SeqCst);

    let failed = glocks.acquire(NAME, LockState::Shared, &ops);
    assert_eq!(failed.unwrap_err(), GlockError::GoLock(ReadFailed));
    assert_eq!(glocks.stats().acquisitions(), 0);

    ops.fail_go_lock.store(false, Ordering::SeqCst);
    let holder = glocks.acquire(NAME, LockState::Shared, &ops).unwrap();
    assert_eq!(holder.state(), LockState::Shared);
    assert_eq!(ops.go_locks.load(Ordering::SeqCst), 1);
}

#[test]
fn a_shut_down_cluster_fails_waiting_requests() {
    let cluster = SimCluster::new();
    let local = node(&cluster, 1);
    let remote = cluster.node(2);
    remote
        .lock(NAME, LockState::Unlocked, LockState::Exclusive)
        .unwrap();

    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            local
                .glocks
                .acquire(NAME, LockState::Shared, &local.ops)
                .err()
        });
        wait_until("node 1 waits", || {
            local.glocks.find(NAME).is_some() && queue(&local.glocks).1 == 1
        });
        cluster.shut_down();
        assert_eq!(
            waiting.join().unwrap(),
            Some(GlockError::Lock(LockError::ShutDown))
        );
    });
    let holders: Vec<_> = local
        .glocks
        .find(NAME)
        .unwrap()
        .inner
        .lock()
        .holders
        .clone()
        .into();
    assert!(holders.is_empty());
}

/// Checks the holders a test says it is: never EX with anything, never SH with DF.
#[derive(Default)]
struct HolderCheck {
    shared: AtomicUsize,
    deferred: AtomicUsize,
    exclusive: AtomicUsize,
}

impl HolderCheck {
    fn counter(&self, state: LockState) -> &AtomicUsize {
        match state {
            LockState::Shared => &self.shared,
            LockState::Deferred => &self.deferred,
            _ => &self.exclusive,
        }
    }

    fn enter(&self, state: LockState) {
        self.counter(state).fetch_add(1, Ordering::SeqCst);
        let (shared, deferred, exclusive) = (
            self.shared.load(Ordering::SeqCst),
            self.deferred.load(Ordering::SeqCst),
            self.exclusive.load(Ordering::SeqCst),
        );
        let kinds = [shared, deferred, exclusive]
            .iter()
            .filter(|&&n| n > 0)
            .count();
        assert!(
            kinds <= 1 && exclusive <= 1,
            "{shared} SH, {deferred} DF, {exclusive} EX"
        );
    }

    fn leave(&self, state: LockState) {
        self.counter(state).fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn many_threads_and_demotes_lose_no_wake_up() {
    let cluster = SimCluster::new();
    let local = node(&cluster, 1);
    let check = HolderCheck::default();
    let states = [LockState::Shared, LockState::Exclusive, LockState::Deferred];
    let deadline = Instant::now() + Duration::from_secs(60);

    std::thread::scope(|scope| {
        for thread in 0..4usize {
            let (local, check) = (&local, &check);
            scope.spawn(move || {
                for round in 0..300usize {
                    let state = states[(thread + round * 7) % 3];
                    let holder = local.glocks.acquire(NAME, state, &local.ops).unwrap();
                    local.ops.holding.fetch_add(1, Ordering::SeqCst);
                    check.enter(state);
                    check.leave(state);
                    local.ops.holding.fetch_sub(1, Ordering::SeqCst);
                    drop(holder);
                    assert!(Instant::now() < deadline, "holders stopped making progress");
                }
            });
        }
        // Node 2 takes EX now and then, which demotes node 1 under load.
        let remote = cluster.node(2);
        for _ in 0..20 {
            remote
                .lock(NAME, LockState::Unlocked, LockState::Exclusive)
                .unwrap();
            remote.demote(NAME, LockState::Exclusive, LockState::Unlocked);
            std::thread::yield_now();
        }
    });

    let stats = local.glocks.stats();
    assert_eq!(stats.acquisitions(), 1200);
    // Node 1's requests queue behind node 2's: one demote per EX of node 2 at most.
    assert!(stats.demotes <= 20, "{} demotes", stats.demotes);
    assert_eq!(cluster.state_of(2, NAME), LockState::Unlocked);
}
