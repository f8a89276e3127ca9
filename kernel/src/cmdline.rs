//! The kernel command line: words separated by spaces, `key` or `key=value`.
//!
//! The command line comes from the boot loader (`/chosen/bootargs`, PVH `cmdline_paddr`) and
//! is input like any other: unknown words are reported and ignored, never fatal.

/// What the kernel was asked to do after booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Log the boot and stop (the default).
    Boot,
    /// Run the in-kernel tests whose name contains `filter` (all of them when empty).
    RunTests { filter: &'a str },
    /// Read an unmapped address, to show how an unexpected fault is reported.
    Fault,
    /// Panic, to show how a panic is reported.
    Panic,
    /// Mount the root filesystem and log the SHA-256 of every regular file on it; files larger
    /// than `max_size` bytes (`sha256-all=BYTES`) are listed as skipped instead.
    HashAllFiles { max_size: Option<u64> },
    /// Mount the root filesystem in a simulated cluster and read files through file
    /// mappings, with the fault counters (`crate::mmap::selftest`).
    MmapSelftest,
    /// Mount the root filesystem in a simulated cluster and check the cached-only read path
    /// (cold, hot, always locking, after a remote write), logging each read's cost.
    CacheSelftest,
    /// Mount the root filesystem and time reading `/bench-64m` cold, hot, and in cached
    /// 4 KiB reads.
    Bench,
}

/// A parsed command line.
#[derive(Clone, Copy, Debug)]
pub struct CommandLine<'a> {
    text: &'a str,
}

impl<'a> CommandLine<'a> {
    /// Wraps the boot loader's command line.
    pub fn parse(text: &'a str) -> Self {
        Self { text }
    }

    /// The words, split at ASCII whitespace.
    fn words(&self) -> impl Iterator<Item = &'a str> {
        self.text.split_ascii_whitespace()
    }

    /// The action asked for; when several are given, the last one wins.
    pub fn action(&self) -> Action<'a> {
        self.words()
            .filter_map(action_of_word)
            .last()
            .unwrap_or(Action::Boot)
    }

    /// The disk named by `root=` (`virtio0`, `initrd`, ...); the last one wins.
    pub fn root(&self) -> Option<&'a str> {
        self.words()
            .filter_map(|word| match split_word(word) {
                ("root", Some(value)) if !value.is_empty() => Some(value),
                _ => None,
            })
            .last()
    }

    /// The page cache's size in pages (`cache_pages=N`); the last one wins. A value that is
    /// not a positive number is ignored (and reported as an unknown word).
    pub fn cache_pages(&self) -> Option<u64> {
        self.words().filter_map(cache_pages_of_word).last()
    }

    /// Words the kernel does not know, to be reported.
    pub fn unknown_words(&self) -> impl Iterator<Item = &'a str> {
        self.words().filter(|word| !is_known(word))
    }
}

/// Splits `key=value` (or a bare `key`).
fn split_word(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (word, None),
    }
}

/// The action a word asks for, if it is an action word.
fn action_of_word(word: &str) -> Option<Action<'_>> {
    match split_word(word) {
        ("test", value) => Some(Action::RunTests {
            filter: value.unwrap_or(""),
        }),
        ("fault", Some("read")) => Some(Action::Fault),
        ("panic", None) => Some(Action::Panic),
        ("mmap-selftest", None) => Some(Action::MmapSelftest),
        ("sha256-all", None) => Some(Action::HashAllFiles { max_size: None }),
        ("sha256-all", Some(bytes)) => Some(Action::HashAllFiles {
            max_size: Some(bytes.parse().ok()?),
        }),
        ("cache-selftest", None) => Some(Action::CacheSelftest),
        ("bench", None) => Some(Action::Bench),
        _ => None,
    }
}

/// The page count of a valid `cache_pages=N` word.
fn cache_pages_of_word(word: &str) -> Option<u64> {
    match split_word(word) {
        ("cache_pages", Some(pages)) => pages.parse().ok().filter(|&pages| pages > 0),
        _ => None,
    }
}

/// Words the kernel understands. Boot-loader words that Linux would take (`console=`,
/// `earlycon`) are accepted silently, as U-Boot and QEMU add them.
fn is_known(word: &str) -> bool {
    let (key, _) = split_word(word);
    action_of_word(word).is_some()
        || cache_pages_of_word(word).is_some()
        || matches!(key, "console" | "earlycon" | "root" | "quiet")
}

pub mod tests {
    //! In-kernel tests of command line parsing.

    use super::*;
    use crate::ktest::{KernelTest, TestResult};
    use crate::{ktest_assert, ktest_assert_eq};

    pub const TESTS: &[KernelTest] = &[KernelTest::new(
        "cmdline::actions_and_unknown_words",
        actions_and_unknown_words,
    )];

    fn actions_and_unknown_words() -> TestResult {
        ktest_assert!(
            CommandLine::parse("").action() == Action::Boot,
            "empty means boot"
        );
        ktest_assert!(
            CommandLine::parse("  test  ").action() == Action::RunTests { filter: "" },
            "bare test runs all"
        );
        ktest_assert!(
            CommandLine::parse("console=ttyS0 test=mem::").action()
                == Action::RunTests { filter: "mem::" },
            "test=PATTERN filters"
        );
        ktest_assert!(
            CommandLine::parse("test panic").action() == Action::Panic,
            "the last action wins"
        );
        ktest_assert!(
            CommandLine::parse("root=initrd mmap-selftest").action() == Action::MmapSelftest,
            "mmap-selftest maps files"
        );
        ktest_assert!(
            CommandLine::parse("fault=write").action() == Action::Boot,
            "an unknown fault kind is not an action"
        );

        ktest_assert!(
            CommandLine::parse("root=virtio0 sha256-all").action()
                == Action::HashAllFiles { max_size: None },
            "sha256-all hashes every file"
        );
        ktest_assert!(
            CommandLine::parse("sha256-all=4096").action()
                == Action::HashAllFiles {
                    max_size: Some(4096)
                },
            "sha256-all=BYTES skips larger files"
        );
        ktest_assert!(
            CommandLine::parse("sha256-all=4k").action() == Action::Boot,
            "a size that is not a number is not an action"
        );
        ktest_assert_eq!(
            CommandLine::parse("root=virtio0 quiet root=initrd").root(),
            Some("initrd")
        );
        ktest_assert_eq!(CommandLine::parse("root= test").root(), None);
        ktest_assert_eq!(
            CommandLine::parse("cache_pages=64 cache_pages=4096").cache_pages(),
            Some(4096)
        );
        ktest_assert_eq!(CommandLine::parse("cache_pages=0").cache_pages(), None);
        ktest_assert!(
            CommandLine::parse("cache-selftest").action() == Action::CacheSelftest,
            "cache-selftest is an action"
        );
        ktest_assert!(
            CommandLine::parse("bench").action() == Action::Bench,
            "bench is an action"
        );
        ktest_assert_eq!(
            CommandLine::parse("cache_pages=x").unknown_words().count(),
            1
        );

        let line = CommandLine::parse("test bogus=1 console=ttyS0 fault=write");
        let mut unknown = line.unknown_words();
        ktest_assert_eq!(unknown.next(), Some("bogus=1"));
        ktest_assert_eq!(unknown.next(), Some("fault=write"));
        ktest_assert_eq!(unknown.next(), None);
        Ok(())
    }
}
