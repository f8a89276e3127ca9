//! The monotonic clock: the architecture's free-running counter, scaled to nanoseconds.
//!
//! The counter (`rdtime` on riscv64, the TSC on x86_64) starts near zero at reset and never
//! goes backwards; its frequency comes from the firmware (riscv64: `timebase-frequency`) or
//! a calibration (x86_64). Until the architecture code has set the frequency, time reads 0.
//! The defmt timestamp of every log line comes from here.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;

/// Counter ticks per second; 0 until [`set_counter_frequency`] runs.
static COUNTER_FREQUENCY_HZ: AtomicU64 = AtomicU64::new(0);

/// Records the counter frequency. The architecture code calls this once, early in boot.
pub fn set_counter_frequency(hz: u64) {
    COUNTER_FREQUENCY_HZ.store(hz, Ordering::Relaxed);
}

/// The counter frequency in Hz (0 before it is known).
pub fn counter_frequency() -> u64 {
    COUNTER_FREQUENCY_HZ.load(Ordering::Relaxed)
}

/// A point on the monotonic clock, in nanoseconds since the counter started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, defmt::Format)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The current time.
    pub fn now() -> Self {
        Self {
            nanos: ticks_to_nanos(arch::read_counter(), counter_frequency()),
        }
    }

    /// Nanoseconds since the counter started.
    pub fn as_nanos(&self) -> u64 {
        self.nanos
    }

    /// Microseconds since the counter started.
    pub fn as_micros(&self) -> u64 {
        self.nanos / 1_000
    }

    /// Nanoseconds from `earlier` to `self` (0 if `earlier` is later).
    pub fn nanos_since(&self, earlier: Instant) -> u64 {
        self.nanos.saturating_sub(earlier.nanos)
    }
}

/// Converts counter ticks to nanoseconds without overflowing for any 64-bit tick count.
fn ticks_to_nanos(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(hz);
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

defmt::timestamp!("{=u64:us}", Instant::now().as_micros());

pub mod tests {
    //! In-kernel tests of the clock.

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::{ktest_assert, ktest_assert_eq, ktest_fail};

    pub const TESTS: &[KernelTest] = &[
        KernelTest::new(
            "time::counter_frequency_is_known",
            counter_frequency_is_known,
        ),
        KernelTest::new("time::clock_is_monotonic", clock_is_monotonic),
        KernelTest::new("time::clock_advances", clock_advances),
        KernelTest::new("time::tick_conversion", tick_conversion),
    ];

    fn counter_frequency_is_known() -> TestResult {
        // Anything from 1 MHz (riscv timebases are 1-25 MHz) to 10 GHz (a TSC).
        let hz = counter_frequency();
        ktest_assert!(
            (1_000_000..=10_000_000_000).contains(&hz),
            "implausible frequency",
            hz
        );
        Ok(())
    }

    fn clock_is_monotonic() -> TestResult {
        let mut previous = Instant::now();
        for _ in 0..100_000 {
            let now = Instant::now();
            ktest_assert!(now >= previous, "clock went backwards", previous.as_nanos());
            previous = now;
        }
        Ok(())
    }

    fn clock_advances() -> TestResult {
        // Spin until the clock has moved 1 ms, with a bound on iterations so a stopped
        // counter fails the test instead of hanging it.
        let start = Instant::now();
        for _ in 0..100_000_000u64 {
            if Instant::now().nanos_since(start) >= 1_000_000 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        ktest_fail!("clock did not advance 1 ms", start.as_nanos())
    }

    fn tick_conversion() -> TestResult {
        ktest_assert_eq!(ticks_to_nanos(10_000_000, 10_000_000), 1_000_000_000);
        ktest_assert_eq!(ticks_to_nanos(3, 1_000_000_000), 3);
        ktest_assert_eq!(ticks_to_nanos(u64::MAX, 1), u64::MAX);
        ktest_assert_eq!(ticks_to_nanos(123, 0), 0);
        Ok(())
    }
}
