//! In-kernel tests on stable Rust.
//!
//! Code that needs the real machine (page tables, traps, the clock, device drivers) is tested
//! inside the kernel. A test is a plain function returning [`TestResult`]; each module lists
//! its tests in a `TESTS` slice and [`SUITES`] gathers the slices, so no unstable test
//! framework and no linker tricks are needed.
//!
//! Booted with `test` on its command line (`test=PATTERN` runs only the tests whose name
//! contains PATTERN), the kernel runs the tests and logs one line per test:
//!
//! ```text
//! test mem::frame::reserved_ranges_are_never_allocated ... ok (1532 us)
//! test time::clock_is_monotonic ... FAILED at kernel/src/time.rs:80: clock went backwards
//! test result: 11 passed, 1 failed
//! ```
//!
//! The runner's integration tests (`runner/tests/`) decode those lines and assert on each.
//!
//! # Adding a test
//!
//! Write `fn my_test() -> TestResult` in the module's `tests` submodule, check with
//! [`ktest_assert!`](crate::ktest_assert) and [`ktest_assert_eq!`](crate::ktest_assert_eq)
//! ([`ktest_fail!`](crate::ktest_fail) where a `let ... else` did not match), and add
//! `KernelTest::new("module::my_test", my_test)` to that module's `TESTS`. A new module's
//! `TESTS` goes into [`SUITES`].

use crate::time::Instant;

/// What a test returns: `Err` carries where and why it failed.
pub type TestResult = Result<(), TestFailure>;

/// A failed check: the message and the source location of the check.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct TestFailure {
    /// What was expected.
    pub message: &'static str,
    /// Source file of the failed check.
    pub file: &'static str,
    /// Source line of the failed check.
    pub line: u32,
}

impl TestFailure {
    /// A failure with `message` where the caller was called from: for test helpers that
    /// fail a test with `?` (mark them `#[track_caller]` too).
    #[track_caller]
    pub fn at_caller(message: &'static str) -> Self {
        let location = core::panic::Location::caller();
        Self {
            message,
            file: location.file(),
            line: location.line(),
        }
    }
}

/// A registered in-kernel test.
pub struct KernelTest {
    /// Unique name, `module::test`.
    pub name: &'static str,
    /// The test.
    pub run: fn() -> TestResult,
}

impl KernelTest {
    /// Registers `run` under `name`.
    pub const fn new(name: &'static str, run: fn() -> TestResult) -> Self {
        Self { name, run }
    }
}

/// Every test suite of the kernel, in the order they run.
pub const SUITES: &[&[KernelTest]] = &[
    crate::time::tests::TESTS,
    crate::cmdline::tests::TESTS,
    crate::mem::frame::tests::TESTS,
    crate::mem::heap::tests::TESTS,
    crate::arch::TESTS,
    crate::fault_tests::TESTS,
    crate::block::dma::tests::TESTS,
    crate::vm::tests::TESTS,
    crate::fscache::tests::TESTS,
];

/// How a test run went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct Summary {
    /// Tests that returned `Ok`.
    pub passed: u32,
    /// Tests that returned `Err`.
    pub failed: u32,
}

/// Runs every registered test whose name contains `filter` (all when empty), logging each
/// result and a summary line.
pub fn run_tests(filter: &str) -> Summary {
    let mut summary = Summary::default();
    let selected = || {
        SUITES
            .iter()
            .flat_map(|suite| suite.iter())
            .filter(|test| test.name.contains(filter))
    };
    defmt::info!("running {=usize} kernel tests", selected().count());

    for test in selected() {
        let start = Instant::now();
        let result = (test.run)();
        let micros = Instant::now().nanos_since(start) / 1_000;
        match result {
            Ok(()) => {
                summary.passed += 1;
                defmt::info!("test {=str} ... ok ({=u64} us)", test.name, micros);
            }
            Err(failure) => {
                summary.failed += 1;
                defmt::error!(
                    "test {=str} ... FAILED at {=str}:{=u32}: {=str}",
                    test.name,
                    failure.file,
                    failure.line,
                    failure.message
                );
            }
        }
    }

    defmt::info!(
        "test result: {=u32} passed, {=u32} failed",
        summary.passed,
        summary.failed
    );
    summary
}

/// Fails the test with `message` unless `condition` holds; an optional value (anything that
/// implements `defmt::Format`) is logged with the failure.
#[macro_export]
macro_rules! ktest_assert {
    ($condition:expr, $message:literal $(, $value:expr)? $(,)?) => {
        if !$condition {
            $crate::ktest_fail!($message $(, $value)?);
        }
    };
}

/// Fails the test with `message` (and an optional value, logged with it): for the `else` of
/// a `let` that did not match.
#[macro_export]
macro_rules! ktest_fail {
    ($message:literal $(, $value:expr)? $(,)?) => {{
        $(defmt::error!("{=str}: value was {}", $message, $value);)?
        return Err($crate::ktest::TestFailure {
            message: $message,
            file: file!(),
            line: line!(),
        });
    }};
}

/// Fails the test unless the two values are equal, logging both when they are not.
#[macro_export]
macro_rules! ktest_assert_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    defmt::error!("assertion failed: left = {}, right = {}", left, right);
                    return Err($crate::ktest::TestFailure {
                        message: concat!(
                            "assertion failed: ",
                            stringify!($left),
                            " == ",
                            stringify!($right)
                        ),
                        file: file!(),
                        line: line!(),
                    });
                }
            }
        }
    };
}
