//! The panic handler: logs the panic through defmt and stops the machine with
//! [`ExitCode::Panic`].

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{ExitCode, arch};

/// Set by the first panic, so a panic while reporting a panic stops at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

// On the host, `cargo clippy --workspace` type-checks the kernel in a build where other
// members link std, which brings its own panic handler.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        arch::exit(ExitCode::Panic);
    }

    let (file, line) = info.location().map_or(("<unknown>", 0), |location| {
        (location.file(), location.line())
    });
    defmt::error!(
        "kernel panic at {=str}:{=u32}: {}",
        file,
        line,
        defmt::Display2Format(&info.message())
    );
    arch::exit(ExitCode::Panic)
}
