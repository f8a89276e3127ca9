//! The defmt global logger: log frames go to the boot console.
//!
//! defmt sends each log call as one compact binary frame (an index into the string table of
//! the kernel ELF plus the arguments); the runner decodes them with the same ELF. Frames are
//! rzcobs-encoded, so each ends with a 0x00 byte and a decoder that joins mid-stream (or after
//! the firmware's own text) resynchronises at the next one. Before its first frame the logger
//! writes a single 0x00, which tells the runner where the firmware's output ends.
//!
//! | path | lock taken |
//! | --- | --- |
//! | any `defmt::info!` etc. | a critical section (interrupts off) from the frame's start to its end |
//!
//! # Limitations
//!
//! The critical section only excludes interrupts on the current CPU; the kernel runs on one
//! CPU. A second CPU would need a spinlock here too.
//!
//! A fault taken while a frame is being written (a bug in the logger's caller) logs the fault
//! as a fresh frame: the logger ends the broken frame with a 0x00 byte first, so the decoder
//! drops it and decodes the fault report.

use crate::arch;

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` enters a critical section and `release` leaves it, so on this single CPU
// no two frames interleave; `write` and `release` are only called between them, as defmt's
// contract for `Logger` promises.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // SAFETY: the matching `critical_section::release` happens in `Logger::release`, with
        // the state returned here, as defmt pairs every `acquire` with one `release`.
        let restore = unsafe { critical_section::acquire() };
        state::begin_frame(restore);
    }

    unsafe fn flush() {}

    unsafe fn release() {
        if let Some(restore) = state::end_frame() {
            // SAFETY: `restore` came from the `critical_section::acquire` of the outermost
            // `Logger::acquire`, which this release pairs with.
            unsafe { critical_section::release(restore) };
        }
    }

    unsafe fn write(bytes: &[u8]) {
        state::write(bytes);
    }
}

/// Writes encoded bytes to the console.
fn write_to_console(bytes: &[u8]) {
    arch::console_write(bytes);
}

mod state {
    //! The logger's state, touched only inside the critical section.

    use core::cell::UnsafeCell;

    use super::write_to_console;

    struct LoggerState {
        encoder: defmt::Encoder,
        /// How many frames are open: 1 normally, 2 when a fault interrupted a frame.
        depth: u32,
        /// Whether the 0x00 that separates firmware output from frames was written.
        separator_written: bool,
        /// How to leave the outermost critical section.
        restore: Option<critical_section::RestoreState>,
    }

    struct Shared(UnsafeCell<LoggerState>);

    // SAFETY: the state is only reached through `with_state`, whose callers run inside the
    // logger's critical section, so no two contexts touch it at once on this single CPU.
    unsafe impl Sync for Shared {}

    static STATE: Shared = Shared(UnsafeCell::new(LoggerState {
        encoder: defmt::Encoder::new(),
        depth: 0,
        separator_written: false,
        restore: None,
    }));

    fn with_state<R>(f: impl FnOnce(&mut LoggerState) -> R) -> R {
        // SAFETY: callers hold the logger's critical section (see `Shared`), and `f` does not
        // log, so this is the only reference to the state while it lives.
        f(unsafe { &mut *STATE.0.get() })
    }

    pub(super) fn begin_frame(restore: critical_section::RestoreState) {
        with_state(|state| {
            if !state.separator_written {
                write_to_console(&[0]);
                state.separator_written = true;
            }

            if state.depth == 0 {
                state.restore = Some(restore);
            } else {
                // A frame is open: a fault interrupted the logger. End the broken frame so the
                // decoder drops it, and start afresh.
                write_to_console(&[0]);
                state.encoder = defmt::Encoder::new();
            }
            state.depth += 1;
            state.encoder.start_frame(write_to_console);
        })
    }

    pub(super) fn write(bytes: &[u8]) {
        with_state(|state| state.encoder.write(bytes, write_to_console))
    }

    /// Ends the frame; returns the restore state when the outermost frame closes.
    pub(super) fn end_frame() -> Option<critical_section::RestoreState> {
        with_state(|state| {
            state.encoder.end_frame(write_to_console);
            state.depth = state.depth.saturating_sub(1);
            if state.depth == 0 {
                state.restore.take()
            } else {
                None
            }
        })
    }
}
