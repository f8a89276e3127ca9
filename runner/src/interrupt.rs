//! Ctrl-C: kill QEMU and say so, instead of leaving it running.
//!
//! QEMU runs in its own process group, so the terminal's SIGINT reaches only the runner (and
//! a cargo build it runs). The handler tells every run in progress through its event channel;
//! each kills its QEMU and reports [`Outcome::Interrupted`](crate::Outcome::Interrupted). With
//! no run in progress (during the kernel build, say) the runner exits at once with status 130.
//!
//! The handler is installed by [`install_ctrl_c_handler`], which the command-line program
//! calls; a test harness keeps its own SIGINT behaviour.

use std::sync::Mutex;
use std::sync::mpsc::Sender;

use crate::outcome::RunnerStatus;
use crate::run::Event;

/// Where the Ctrl-C handler sends its notice: the event channel of each run in progress.
static LISTENERS: Mutex<Vec<(u64, Sender<Event>)>> = Mutex::new(Vec::new());

/// Installs the process-wide Ctrl-C handler. Call it once, from `main`.
pub fn install_ctrl_c_handler() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        let listeners = LISTENERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let delivered = listeners
            .iter()
            .filter(|(_, sender)| sender.send(Event::Interrupted).is_ok())
            .count();
        if delivered == 0 {
            eprintln!("runner: interrupted");
            std::process::exit(i32::from(RunnerStatus::Interrupted.code()));
        }
    })
}

/// A run's registration with the Ctrl-C handler; dropping it unregisters.
pub(crate) struct Registration {
    id: u64,
}

/// Registers `sender` to receive [`Event::Interrupted`] on Ctrl-C while the returned value
/// lives.
pub(crate) fn register(sender: Sender<Event>) -> Registration {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LISTENERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((id, sender));
    Registration { id }
}

impl Drop for Registration {
    fn drop(&mut self) {
        LISTENERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}
