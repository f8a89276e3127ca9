//! Deliberate faults: how the kernel shows that its trap handling reports the right cause and
//! address.
//!
//! Two paths are exercised:
//!
//! - `fault=read` on the command line reads an unmapped address with an ordinary load. Nothing
//!   expects that fault, so the architecture's trap handler logs it (cause, address,
//!   instruction) and stops the machine with [`ExitCode::Fault`](crate::ExitCode::Fault); the
//!   runner's tests check the decoded report.
//! - The in-kernel test reads the same address through `arch::probe_read`, whose fault the trap
//!   handler recovers from (an exception-table fixup), and checks the decoded fault.

use crate::ExitCode;
use crate::arch::{self, Access, FaultKind};
use crate::ktest::{KernelTest, TestResult};
use crate::{ktest_assert_eq, ktest_fail};

/// A lower-half address that no page table of the kernel maps on either architecture: the
/// kernel lives in the higher half and drops the boot identity mapping.
pub const UNMAPPED_ADDRESS: usize = 0xdead_0000;

/// Reads [`UNMAPPED_ADDRESS`]; the trap handler reports the fault and stops the machine.
pub fn deliberate_fault() -> ExitCode {
    defmt::info!(
        "reading unmapped address {=u64:#x} on purpose",
        UNMAPPED_ADDRESS as u64
    );

    // SAFETY: none of the facts a volatile read needs holds, on purpose: the address is not
    // mapped, so the load traps before any memory is read, and the trap handler stops the
    // machine instead of returning here.
    let value = unsafe { core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u64) };

    defmt::error!(
        "read of unmapped address {=u64:#x} returned {=u64:#x} instead of faulting",
        UNMAPPED_ADDRESS as u64,
        value
    );
    ExitCode::Fault
}

pub const TESTS: &[KernelTest] = &[KernelTest::new(
    "fault::unmapped_read_reports_page_fault",
    unmapped_read_reports_page_fault,
)];

fn unmapped_read_reports_page_fault() -> TestResult {
    let result = arch::probe_read(UNMAPPED_ADDRESS);

    let Err(fault) = result else {
        ktest_fail!("read of an unmapped address did not fault")
    };
    defmt::debug!(
        "probe of {=u64:#x} faulted as expected: {}",
        UNMAPPED_ADDRESS as u64,
        fault
    );
    ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
    ktest_assert_eq!(fault.address, UNMAPPED_ADDRESS);
    Ok(())
}
