//! The kernel's GDT and TSS.
//!
//! Long mode ignores segment bases and limits, but the CPU still needs a GDT with a 64-bit
//! code segment for CS, and a TSS for the interrupt stack table: the double-fault handler
//! runs on [`DOUBLE_FAULT_STACK`] (IST slot [`DOUBLE_FAULT_IST_INDEX`]), so a kernel stack
//! overflow, which faults again when the CPU pushes the fault frame, is still reported.
//!
//! The entry code's GDT lies in the identity map; [`init`] replaces it with this one, in the
//! kernel image, before the identity map is removed.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::Stack;

/// The IST slot (0-based, as the TSS array indexes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

/// Size of the stack the double-fault handler runs on.
const DOUBLE_FAULT_STACK_SIZE: usize = 16 * 1024;

/// The stack the double-fault handler runs on.
static DOUBLE_FAULT_STACK: Stack<DOUBLE_FAULT_STACK_SIZE> = Stack::new();

static TSS: Once<TaskStateSegment> = Once::new();

/// The GDT and the selectors of its segments.
struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static GDT: Once<Gdt> = Once::new();

/// Loads the kernel's GDT and TSS and reloads every segment register.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] =
            VirtAddr::from_ptr(DOUBLE_FAULT_STACK.top());
        tss
    });

    let gdt = GDT.call_once(|| {
        let mut table = GlobalDescriptorTable::new();
        let code = table.append(Descriptor::kernel_code_segment());
        let data = table.append(Descriptor::kernel_data_segment());
        let tss = table.append(Descriptor::tss_segment(tss));
        Gdt {
            table,
            code,
            data,
            tss,
        }
    });

    gdt.table.load();
    load::segment_registers(gdt.code, gdt.data, gdt.tss);
    defmt::debug!(
        "GDT loaded; double-fault stack at {=u64:#x}",
        VirtAddr::from_ptr(DOUBLE_FAULT_STACK.top()).as_u64()
    );
}

pub mod tests {
    //! In-kernel tests of the segment setup.

    use x86_64::instructions::segmentation::{CS, Segment};
    use x86_64::instructions::tables::sgdt;

    use super::*;
    use crate::ktest::TestResult;
    use crate::{ktest_assert_eq, ktest_fail};

    pub fn kernel_gdt_is_loaded() -> TestResult {
        let Some(gdt) = GDT.get() else {
            ktest_fail!("the GDT was never built")
        };
        let pointer = sgdt();
        ktest_assert_eq!(
            pointer.base.as_ptr::<u8>(),
            gdt.table.entries().as_ptr().cast()
        );
        ktest_assert_eq!(CS::get_reg().0, gdt.code.0);
        Ok(())
    }
}

mod load {
    //! Loading segment registers: the only unsafe code of this module.

    use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
    use x86_64::instructions::tables::load_tss;
    use x86_64::structures::gdt::SegmentSelector;

    /// Points CS, the data segment registers and the task register at the loaded GDT.
    pub(super) fn segment_registers(
        code: SegmentSelector,
        data: SegmentSelector,
        tss: SegmentSelector,
    ) {
        // SAFETY: `segments::init` just loaded the GDT these selectors index: a 64-bit ring 0
        // code segment, a ring 0 data segment and an available TSS whose IST stack is a
        // static. The GDT and TSS are statics, so they outlive their use; the TSS is loaded
        // once (loading marks it busy).
        unsafe {
            CS::set_reg(code);
            SS::set_reg(data);
            DS::set_reg(data);
            ES::set_reg(data);
            FS::set_reg(SegmentSelector(0));
            GS::set_reg(SegmentSelector(0));
            load_tss(tss);
        }
    }
}
