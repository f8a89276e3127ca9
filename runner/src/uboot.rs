//! Booting the riscv64 kernel through U-Boot's `booti`, as a StarFive VisionFive 2 does.
//!
//! On the board the chain is OpenSBI → U-Boot (S-mode) → `booti` of the flat `Image`, with the
//! device tree and an initrd. Under QEMU the same chain is OpenSBI (`-bios default`) → Debian's
//! `u-boot-qemu` S-mode build as the `-kernel` → `booti`. QEMU's generic loader places the
//! kernel's flat image at [`KERNEL_ADDRESS`] and the initrd at [`INITRD_ADDRESS`] in guest RAM,
//! where a person on the board would have put them with `load mmc ...`; nothing else tells
//! the kernel about them: `booti` writes the initrd's bounds and the command line into the
//! device tree's `/chosen` node, and U-Boot moves the kernel to its own choice of address.
//!
//! U-Boot is driven through its serial console like a person would: [`ConsoleScript`] watches
//! the firmware text for the autoboot countdown and stops it with a key, waits for the `=> `
//! prompt and types the [`booti_command`]. The device tree is U-Boot's control tree at
//! `$fdtcontroladdr`, the one QEMU generated; `booti` fixes it up in place.
//!
//! # Limitations
//!
//! U-Boot's command line holds at most [`MAX_COMMAND_LENGTH`] bytes, and `bootargs` is set
//! inside single quotes, so a kernel command line with a quote, a control character or too
//! many bytes for that line is refused rather than mangled. The placement assumes QEMU
//! `virt`'s RAM at [`RAM_BASE`] and leaves the top [`U_BOOT_RESERVED`] bytes of RAM to U-Boot.

use std::path::Path;
use std::sync::OnceLock;

use crate::debian::{self, PackageError};

/// Debian's U-Boot for QEMU `virt`, built to run in S-mode under OpenSBI.
pub const U_BOOT_QEMU_SMODE: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";

/// The Debian package that ships [`U_BOOT_QEMU_SMODE`].
pub const U_BOOT_PACKAGE: &str = "u-boot-qemu";

/// Where QEMU `virt`'s RAM begins.
pub const RAM_BASE: u64 = 0x8000_0000;

/// Where the kernel's flat image is placed: U-Boot's `kernel_addr_r` on QEMU `virt`. `booti`
/// moves the image from there to the address it chooses.
pub const KERNEL_ADDRESS: u64 = 0x8400_0000;

/// Where the initrd is placed: 64 MiB above the kernel, room for a 64 MiB image below the
/// top of a 256 MiB machine.
pub const INITRD_ADDRESS: u64 = 0x8800_0000;

/// The top of RAM that U-Boot keeps for itself: it relocates its code, heap, stack and
/// control device tree there (about 25 MiB on a 256 MiB machine).
pub const U_BOOT_RESERVED: u64 = 32 << 20;

/// The longest command U-Boot's console reads (`CONFIG_SYS_CBSIZE` is 256, with the final
/// NUL).
pub const MAX_COMMAND_LENGTH: usize = 255;

/// What U-Boot prints before it counts down to autoboot.
const AUTOBOOT_PROMPT: &[u8] = b"Hit any key to stop autoboot";

/// U-Boot's command prompt.
const COMMAND_PROMPT: &[u8] = b"=> ";

/// What U-Boot prints when `booti` hands over to the kernel.
const STARTING_KERNEL: &[u8] = b"Starting kernel";

/// How much console text is kept while waiting for a marker.
const MAX_PENDING_TEXT: usize = 64 * 1024;

/// Why the kernel cannot be booted through U-Boot as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UBootError {
    #[error(
        "the kernel command line {0:?} cannot be passed through U-Boot: it holds a single \
         quote or a control character"
    )]
    UnquotableCommandLine(String),
    #[error(
        "the U-Boot command for this kernel command line is {length} bytes, more than the \
         {MAX_COMMAND_LENGTH} U-Boot's console reads"
    )]
    CommandTooLong { length: usize },
    #[error(
        "the {what} ({size} bytes at {address:#x}) does not fit below {limit:#x} (the next \
         file in RAM, or the top {U_BOOT_RESERVED:#x} bytes U-Boot keeps of the {memory_mib} \
         MiB); give more --memory"
    )]
    DoesNotFit {
        what: &'static str,
        size: u64,
        address: u64,
        limit: u64,
        memory_mib: u32,
    },
    #[error("U-Boot is not available: {0}")]
    Missing(#[from] PackageError),
}

/// Makes sure [`U_BOOT_QEMU_SMODE`] exists, installing [`U_BOOT_PACKAGE`] when it does not
/// and the runner may. Checked once per process.
pub fn ensure_u_boot() -> Result<(), UBootError> {
    static CHECKED: OnceLock<Result<(), PackageError>> = OnceLock::new();
    CHECKED
        .get_or_init(|| debian::ensure_file(Path::new(U_BOOT_QEMU_SMODE), &[U_BOOT_PACKAGE]))
        .clone()
        .map_err(UBootError::Missing)
}

/// Checks that `size` bytes at `address` end below `next` (what is placed after them) and
/// below the memory U-Boot keeps for itself in a machine of `memory_mib` MiB.
pub fn check_fits(
    what: &'static str,
    address: u64,
    size: u64,
    next: u64,
    memory_mib: u32,
) -> Result<(), UBootError> {
    let u_boot = (RAM_BASE + (u64::from(memory_mib) << 20)).saturating_sub(U_BOOT_RESERVED);
    let limit = next.min(u_boot);
    let fits = address
        .checked_add(size)
        .is_some_and(|end| address >= RAM_BASE && end <= limit);
    if fits {
        Ok(())
    } else {
        Err(UBootError::DoesNotFit {
            what,
            size,
            address,
            limit,
            memory_mib,
        })
    }
}

/// The U-Boot command that boots the kernel placed at [`KERNEL_ADDRESS`] with
/// `command_line`, the initrd of `initrd_size` bytes at [`INITRD_ADDRESS`] (if any), and
/// U-Boot's own device tree.
pub fn booti_command(command_line: &str, initrd_size: Option<u64>) -> Result<String, UBootError> {
    if command_line.chars().any(|c| c == '\'' || c.is_control()) {
        return Err(UBootError::UnquotableCommandLine(command_line.to_owned()));
    }

    let initrd = match initrd_size {
        Some(size) => format!("{INITRD_ADDRESS:#x}:{size:#x}"),
        None => "-".to_owned(),
    };
    let command = format!(
        "setenv bootargs '{command_line}'; booti {KERNEL_ADDRESS:#x} {initrd} ${{fdtcontroladdr}}"
    );
    if command.len() > MAX_COMMAND_LENGTH {
        return Err(UBootError::CommandTooLong {
            length: command.len(),
        });
    }
    Ok(command)
}

/// What the console script wants done after reading some of U-Boot's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleAction {
    /// Type these bytes on the serial console.
    Type(Vec<u8>),
    /// U-Boot came back to its prompt instead of starting the kernel; the text is what it
    /// printed after the command.
    BootFailed(String),
}

/// Where the console script is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Waiting for the autoboot countdown (or a prompt, if U-Boot does not count down).
    AwaitingAutoboot,
    /// A key stopped the countdown; waiting for the prompt.
    AwaitingPrompt,
    /// The command was typed; waiting for U-Boot to start the kernel.
    AwaitingKernel,
    /// The kernel was started, or the boot failed: nothing more to do.
    Done,
}

/// Types the boot command at U-Boot's console: stops autoboot, waits for the prompt, types
/// the command and watches whether U-Boot starts the kernel.
#[derive(Clone, Debug)]
pub struct ConsoleScript {
    command: String,
    step: Step,
    /// Console text since the last step, searched for the next marker.
    pending: Vec<u8>,
}

impl ConsoleScript {
    /// A script that types `command` (without its line ending) at the first prompt.
    pub fn new(command: String) -> Self {
        Self {
            command,
            step: Step::AwaitingAutoboot,
            pending: Vec::new(),
        }
    }

    /// Whether the script has nothing more to do.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Reads the next console text from U-Boot; returns what to do about it.
    pub fn read(&mut self, text: &[u8]) -> Option<ConsoleAction> {
        if self.step == Step::Done {
            return None;
        }
        self.pending.extend_from_slice(text);
        if self.pending.len() > MAX_PENDING_TEXT {
            let excess = self.pending.len() - MAX_PENDING_TEXT;
            self.pending.drain(..excess);
        }

        match self.step {
            Step::AwaitingAutoboot if contains(&self.pending, AUTOBOOT_PROMPT) => {
                self.advance(Step::AwaitingPrompt);
                Some(ConsoleAction::Type(b" ".to_vec()))
            }
            Step::AwaitingAutoboot | Step::AwaitingPrompt
                if contains(&self.pending, COMMAND_PROMPT) =>
            {
                self.advance(Step::AwaitingKernel);
                let mut line = self.command.clone().into_bytes();
                line.push(b'\r');
                Some(ConsoleAction::Type(line))
            }
            Step::AwaitingKernel if contains(&self.pending, STARTING_KERNEL) => {
                self.advance(Step::Done);
                None
            }
            Step::AwaitingKernel => {
                // A prompt at the start of a line after the command: `booti` returned.
                let prompt_at = find(&self.pending, b"\n=> ")?;
                let output = String::from_utf8_lossy(&self.pending[..prompt_at]);
                // The first line is U-Boot echoing the command.
                let messages = output
                    .lines()
                    .skip(1)
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.advance(Step::Done);
                Some(ConsoleAction::BootFailed(messages))
            }
            _ => None,
        }
    }

    fn advance(&mut self, step: Step) {
        self.step = step;
        self.pending.clear();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(action: Option<ConsoleAction>) -> Vec<u8> {
        match action {
            Some(ConsoleAction::Type(bytes)) => bytes,
            other => panic!("expected keystrokes, got {other:?}"),
        }
    }

    #[test]
    fn command_sets_bootargs_and_boots_with_initrd_and_control_tree() {
        assert_eq!(
            booti_command("root=initrd sha256-all=16777216", Some(64 << 20)).unwrap(),
            "setenv bootargs 'root=initrd sha256-all=16777216'; \
             booti 0x84000000 0x88000000:0x4000000 ${fdtcontroladdr}"
        );
        assert_eq!(
            booti_command("", None).unwrap(),
            "setenv bootargs ''; booti 0x84000000 - ${fdtcontroladdr}"
        );
    }

    #[test]
    fn command_lines_u_boot_cannot_carry_are_refused() {
        assert!(matches!(
            booti_command("it's", None),
            Err(UBootError::UnquotableCommandLine(_))
        ));
        assert!(matches!(
            booti_command("a\nb", None),
            Err(UBootError::UnquotableCommandLine(_))
        ));
        assert!(matches!(
            booti_command(&"x".repeat(300), None),
            Err(UBootError::CommandTooLong { .. })
        ));
    }

    #[test]
    fn placement_must_end_below_u_boot() {
        assert!(check_fits("initrd", INITRD_ADDRESS, 64 << 20, u64::MAX, 256).is_ok());
        assert!(matches!(
            check_fits("initrd", INITRD_ADDRESS, 65 << 20, u64::MAX, 128),
            Err(UBootError::DoesNotFit {
                limit: 0x8600_0000,
                ..
            })
        ));
        assert!(matches!(
            check_fits("kernel", KERNEL_ADDRESS, 65 << 20, INITRD_ADDRESS, 1024),
            Err(UBootError::DoesNotFit {
                limit: INITRD_ADDRESS,
                ..
            })
        ));
        assert!(check_fits("initrd", u64::MAX - 1, 4, u64::MAX, 256).is_err());
    }

    #[test]
    fn script_stops_autoboot_then_types_the_command_at_the_prompt() {
        let mut script = ConsoleScript::new("booti x".into());
        assert_eq!(script.read(b"U-Boot 2023.01\r\nHit any key to st"), None);
        assert_eq!(typed(script.read(b"op autoboot:  2 ")), b" ");
        assert_eq!(script.read(b"\x08\x08\x08 0 \r\n="), None);
        assert_eq!(typed(script.read(b"> ")), b"booti x\r");
        assert_eq!(
            script.read(b"booti x\r\nMoving Image from 0x84000000 to 0x80200000\r\n"),
            None
        );
        assert!(!script.is_done());
        assert_eq!(script.read(b"\r\nStarting kernel ...\r\n\r\n"), None);
        assert!(script.is_done());
        assert_eq!(script.read(b"\r\n=> "), None);
    }

    #[test]
    fn script_types_at_a_prompt_without_countdown() {
        let mut script = ConsoleScript::new("booti x".into());
        assert_eq!(typed(script.read(b"U-Boot\r\n=> ")), b"booti x\r");
    }

    #[test]
    fn prompt_after_the_command_is_a_failed_boot() {
        let mut script = ConsoleScript::new("booti x".into());
        typed(script.read(b"=> "));
        let action = script.read(b"booti x\r\nBad Linux RISCV Image magic!\r\n=> ");
        assert_eq!(
            action,
            Some(ConsoleAction::BootFailed(
                "Bad Linux RISCV Image magic!".into()
            ))
        );
        assert!(script.is_done());
    }
}
