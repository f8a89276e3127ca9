//! The synchronization primitives of the page cache and the glocks, in one place so that the
//! `loom` models can swap them.
//!
//! Normally these are the house spinlocks (`spin`) and `core` atomics: the kernel has one
//! address space and no scheduler to sleep on, so a waiter spins. Under `cfg(all(test,
//! loom))` they are `loom`'s, which explore every interleaving of the threads of a model;
//! [`relax`] then yields to loom's scheduler instead of spinning.
//!
//! [`Mutex`] and [`RwLock`] hand out their guards directly (as `spin` does), so the code
//! above reads the same in both builds.

#[cfg(not(all(test, loom)))]
mod imp {
    pub use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    pub use spin::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    /// A spinlock.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(spin::Mutex<T>);

    impl<T> Mutex<T> {
        /// A mutex holding `value`.
        pub const fn new(value: T) -> Self {
            Self(spin::Mutex::new(value))
        }

        /// Spins until the lock is free and takes it.
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// A reader-writer spinlock.
    #[derive(Debug, Default)]
    pub struct RwLock<T>(spin::RwLock<T>);

    impl<T> RwLock<T> {
        /// A lock holding `value`.
        pub const fn new(value: T) -> Self {
            Self(spin::RwLock::new(value))
        }

        /// Spins until no writer holds the lock, and shares it.
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read()
        }

        /// Spins until nobody holds the lock, and takes it.
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write()
        }
    }

    /// Called in every wait loop: tells the CPU that it is spinning.
    pub fn relax() {
        core::hint::spin_loop();
    }
}

#[cfg(all(test, loom))]
mod imp {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub use loom::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

    /// loom's mutex, with the guard handed out directly.
    #[derive(Debug)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
    }

    /// loom's reader-writer lock, with the guards handed out directly.
    #[derive(Debug)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap()
        }

        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap()
        }
    }

    /// Lets loom run another thread: every wait loop must, or the model never ends.
    pub fn relax() {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;
