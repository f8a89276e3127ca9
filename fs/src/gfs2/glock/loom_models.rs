//! loom models of the glock: every interleaving of a few threads, up to the preemption
//! bound that `LOOM_MAX_PREEMPTIONS` sets.

use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use loom::thread;

use super::*;

const NAME: GlockName = GlockName {
    lock_type: LockType::Inode,
    number: 7,
};

/// Glock operations that check the holders the model's threads say they are.
#[derive(Default)]
struct ModelOps {
    shared: AtomicUsize,
    exclusive: AtomicUsize,
    go_locks: AtomicUsize,
    go_invals: AtomicUsize,
}

impl ModelOps {
    /// A thread starts using what the glock protects in `state`.
    fn enter(&self, state: LockState) {
        if state == LockState::Exclusive {
            let others = self.exclusive.fetch_add(1, Ordering::SeqCst);
            assert_eq!(others, 0, "two EX holders");
            assert_eq!(self.shared.load(Ordering::SeqCst), 0, "EX with SH");
        } else {
            self.shared.fetch_add(1, Ordering::SeqCst);
            assert_eq!(self.exclusive.load(Ordering::SeqCst), 0, "SH with EX");
        }
    }

    fn leave(&self, state: LockState) {
        let counter = if state == LockState::Exclusive {
            &self.exclusive
        } else {
            &self.shared
        };
        counter.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GlockOps for ModelOps {
    type Error = ();

    fn go_lock(&self, _name: GlockName, _state: LockState) -> Result<(), ()> {
        self.go_locks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn go_inval(&self, _name: GlockName) -> usize {
        assert_eq!(self.shared.load(Ordering::SeqCst), 0, "go_inval under SH");
        assert_eq!(
            self.exclusive.load(Ordering::SeqCst),
            0,
            "go_inval under EX"
        );
        self.go_invals.fetch_add(1, Ordering::SeqCst);
        0
    }
}

fn use_glock(glocks: &GlockManager<Nolock>, ops: &ModelOps, state: LockState) {
    let holder = glocks.acquire(NAME, state, ops).unwrap();
    ops.enter(state);
    ops.leave(state);
    drop(holder);
}

/// Two holders in `states` on two threads: never together unless compatible, and both are
/// granted (a lost wake-up would leave a thread spinning, which loom reports).
fn two_holders(states: [LockState; 2]) {
    loom::model(move || {
        let glocks = Arc::new(GlockManager::new(Nolock));
        let ops = Arc::new(ModelOps::default());

        let threads = states.map(|state| {
            let (glocks, ops) = (glocks.clone(), ops.clone());
            thread::spawn(move || use_glock(&glocks, &ops, state))
        });
        for thread in threads {
            thread.join().unwrap();
        }

        assert_eq!(glocks.stats().acquisitions(), 2);
        assert_eq!(ops.go_locks.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn loom_glock_never_grants_ex_with_sh() {
    two_holders([LockState::Exclusive, LockState::Shared]);
}

#[test]
fn loom_glock_never_grants_two_ex() {
    two_holders([LockState::Exclusive, LockState::Exclusive]);
}

/// A demote racing a holder: `go_inval` never runs under the holder, the demote runs once,
/// and the holder is granted whether it came before or after.
#[test]
fn loom_glock_demote_waits_for_holders() {
    loom::model(|| {
        let glocks = Arc::new(GlockManager::new(Nolock));
        let ops = Arc::new(ModelOps::default());
        use_glock(&glocks, &ops, LockState::Shared);

        let holder = {
            let (glocks, ops) = (glocks.clone(), ops.clone());
            thread::spawn(move || use_glock(&glocks, &ops, LockState::Shared))
        };
        let demoter = {
            let (glocks, ops) = (glocks.clone(), ops.clone());
            thread::spawn(move || glocks.request_demote(NAME, LockState::Unlocked, &*ops))
        };
        holder.join().unwrap();
        demoter.join().unwrap();

        assert_eq!(glocks.stats().demotes, 1);
        assert_eq!(ops.go_invals.load(Ordering::SeqCst), 1);
        // Granted after the demote, the holder promoted the glock again and re-read.
        let go_locks = ops.go_locks.load(Ordering::SeqCst);
        match glocks.state(NAME) {
            LockState::Unlocked => assert_eq!(go_locks, 1),
            LockState::Shared => assert_eq!(go_locks, 2),
            other => panic!("glock left in {other:?}"),
        }
    });
}
