//! In-kernel tests of the riscv64 port: where the kernel runs, what its page tables map, how
//! faults are reported, the critical section, the exit encoding and the device-tree reader.

use super::devicetree::tests as devicetree;
use super::{cpu, paging, power, trap};
use crate::ExitCode;
use crate::arch::{Access, FaultKind};
use crate::ktest::{KernelTest, TestResult};
use crate::{ktest_assert, ktest_assert_eq};

pub const TESTS: &[KernelTest] = &[
    KernelTest::new("riscv64::runs_in_higher_half", runs_in_higher_half),
    KernelTest::new("riscv64::identity_map_is_gone", identity_map_is_gone),
    KernelTest::new(
        "riscv64::direct_map_and_kernel_window_agree",
        direct_map_and_kernel_window_agree,
    ),
    KernelTest::new(
        "riscv64::unmapped_read_is_a_load_page_fault",
        unmapped_read_is_a_load_page_fault,
    ),
    KernelTest::new(
        "riscv64::pages::leaf_has_accessed_and_dirty_preset",
        super::pages::tests::leaf_has_accessed_and_dirty_preset,
    ),
    KernelTest::new(
        "riscv64::critical_section_restores_interrupt_state",
        critical_section_restores_interrupt_state,
    ),
    KernelTest::new("riscv64::finisher_encoding", finisher_encoding),
    KernelTest::new(
        "riscv64::devicetree::visionfive2_blob",
        devicetree::visionfive2_blob,
    ),
    KernelTest::new(
        "riscv64::devicetree::devices::qemu_virt_devices",
        super::devicetree::devices::tests::qemu_virt_devices,
    ),
    KernelTest::new(
        "riscv64::devicetree::devices::visionfive2_has_no_virtio_or_ecam_bridge",
        super::devicetree::devices::tests::visionfive2_has_no_virtio_or_ecam_bridge,
    ),
    KernelTest::new(
        "riscv64::devicetree::synthetic_tree",
        devicetree::synthetic_tree,
    ),
    KernelTest::new(
        "riscv64::devicetree::console_fallbacks",
        devicetree::console_fallbacks,
    ),
    KernelTest::new(
        "riscv64::devicetree::bad_properties_are_errors",
        devicetree::bad_properties_are_errors,
    ),
    KernelTest::new(
        "riscv64::devicetree::corrupt_blobs_are_errors",
        devicetree::corrupt_blobs_are_errors,
    ),
    KernelTest::new(
        "riscv64::devicetree::mutated_blobs_never_panic",
        devicetree::mutated_blobs_never_panic,
    ),
];

/// Start of the top 2 GiB, where the kernel is linked.
const TOP_2_GIB: usize = 0xffff_ffff_8000_0000;

/// A word the direct-map test reads through two mappings.
static MARKER: u64 = 0x6b65_726e_656c_2121;

fn runs_in_higher_half() -> TestResult {
    let pc = raw::program_counter();
    ktest_assert!(
        pc >= TOP_2_GIB,
        "the program counter is below the top 2 GiB",
        pc as u64
    );

    let (link_start, link_end) = paging::kernel_link_range();
    ktest_assert!(
        (link_start..link_end).contains(&pc),
        "the program counter is outside the linked kernel image",
        pc as u64
    );

    let local = 0u8;
    let stack = &raw const local as usize;
    ktest_assert!(
        (link_start..link_end).contains(&stack),
        "the stack is outside the kernel image's .bss",
        stack as u64
    );
    Ok(())
}

fn identity_map_is_gone() -> TestResult {
    let load_address = paging::kernel_load_address() as usize;
    ktest_assert!(load_address != 0, "the load address was not recorded");

    let result = trap::probe_read(load_address);
    let Err(fault) = result else {
        ktest_assert!(
            false,
            "the physical load address is still mapped",
            load_address as u64
        );
        return Ok(());
    };
    ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
    ktest_assert_eq!(fault.raw_cause, 13);
    ktest_assert_eq!(fault.address as u64, load_address as u64);
    Ok(())
}

fn direct_map_and_kernel_window_agree() -> TestResult {
    let (link_start, _) = paging::kernel_link_range();
    let marker = &raw const MARKER as usize;
    let physical = paging::kernel_load_address() + (marker - link_start) as u64;

    let through_window = trap::probe_read(marker);
    let through_direct_map = trap::probe_read(paging::phys_to_virt(physical));
    ktest_assert_eq!(through_window, Ok(MARKER));
    ktest_assert_eq!(through_direct_map, Ok(MARKER));
    Ok(())
}

fn unmapped_read_is_a_load_page_fault() -> TestResult {
    // The first address past the direct map: nothing maps it.
    let unmapped = paging::DIRECT_MAP_OFFSET + paging::DIRECT_MAP_SIZE as usize + 0x1230;

    let result = trap::probe_read(unmapped);
    let Err(fault) = result else {
        ktest_assert!(
            false,
            "a read past the direct map did not fault",
            unmapped as u64
        );
        return Ok(());
    };
    ktest_assert_eq!(fault.kind, FaultKind::PageFault(Access::Read));
    ktest_assert_eq!(fault.raw_cause, 13);
    ktest_assert_eq!(fault.address as u64, unmapped as u64);
    ktest_assert_eq!(fault.error_code, 0);
    let (link_start, link_end) = paging::kernel_link_range();
    ktest_assert!(
        (link_start..link_end).contains(&fault.pc),
        "the fault's pc is not in the kernel",
        fault.pc as u64
    );

    // The probe recovers: the next read works.
    ktest_assert_eq!(trap::probe_read(&raw const MARKER as usize), Ok(MARKER));
    Ok(())
}

fn critical_section_restores_interrupt_state() -> TestResult {
    ktest_assert!(
        !cpu::interrupts_enabled(),
        "interrupts are on while tests run"
    );
    let inside = critical_section::with(|_| cpu::interrupts_enabled());
    ktest_assert!(!inside, "a critical section left interrupts on");
    ktest_assert!(
        !cpu::interrupts_enabled(),
        "leaving a section turned interrupts on"
    );

    let outcome = raw::with_interrupt_flag_set(|| {
        let inside = critical_section::with(|_| {
            let nested = critical_section::with(|_| cpu::interrupts_enabled());
            (cpu::interrupts_enabled(), nested)
        });
        (inside, cpu::interrupts_enabled())
    });
    let Some(((inside, nested), after)) = outcome else {
        ktest_assert!(
            false,
            "an interrupt source is enabled in sie; cannot set sstatus.SIE"
        );
        return Ok(());
    };
    ktest_assert!(!inside && !nested, "a critical section left interrupts on");
    ktest_assert!(after, "leaving a section did not restore sstatus.SIE");
    ktest_assert!(
        !cpu::interrupts_enabled(),
        "sstatus.SIE is still set after the test"
    );
    Ok(())
}

fn finisher_encoding() -> TestResult {
    // What QEMU's sifive_test device turns into its exit status (see the runner).
    ktest_assert_eq!(power::finisher_value(ExitCode::Success), 0x5555);
    ktest_assert_eq!(power::finisher_value(ExitCode::TestsFailed), 0x1_3333);
    ktest_assert_eq!(power::finisher_value(ExitCode::Panic), 0x2_3333);
    ktest_assert_eq!(power::finisher_value(ExitCode::Fault), 0x3_3333);
    Ok(())
}

mod raw {
    //! CSR access for the tests above.

    use core::arch::asm;

    use riscv::register::{sie, sstatus};

    /// The address of the instruction that reads it.
    pub(super) fn program_counter() -> usize {
        let pc: usize;
        // SAFETY: `auipc` with 0 only copies the pc into a register.
        unsafe { asm!("auipc {}, 0", out(reg) pc, options(nomem, nostack, preserves_flags)) };
        pc
    }

    /// Runs `f` with `sstatus.SIE` set, if no interrupt source is enabled in `sie` (so nothing
    /// can actually interrupt), and clears it again afterwards.
    pub(super) fn with_interrupt_flag_set<R>(f: impl FnOnce() -> R) -> Option<R> {
        if sie::read().bits() != 0 {
            return None;
        }
        // SAFETY: with every source masked in `sie`, setting the global enable delivers no
        // interrupt; it only changes the bit the critical section saves and restores.
        unsafe { sstatus::set_sie() };
        let result = f();
        // SAFETY: clearing the global enable only masks interrupts, as the kernel keeps them.
        unsafe { sstatus::clear_sie() };
        Some(result)
    }
}
