//! Bad input is input: 10,000 mutated copies of the fixture images, each read from end to
//! end, must give errors and never a panic, an overflow (tests build with overflow checks),
//! a hang, or an allocation sized by a disk field.
//!
//! The mutations hit the blocks where metadata lives, found by reading the clean image and
//! keeping the blocks that start with the gfs2 magic: the superblock, rgrp headers, dinodes,
//! indirect blocks, leaves. Each case applies a few of: bit flips, byte writes, 64-bit words
//! overwritten with block numbers of other metadata (which makes cycles, repeated blocks and
//! misdirected pointers), zeroed blocks, swapped blocks and copied blocks. Each walk runs on
//! its own thread under a deadline, with every allocation capped at 1 MiB.
//!
//! The cases are drawn from a fixed seed, so a failure reproduces; the `cargo fuzz` target
//! in `fs/fuzz` explores further.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::patched::PatchedDisk;
use common::walk::{WalkReport, walk};
use drivers::block::BlockDevice;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// How long one mutated image may take to walk (a clean walk takes a few milliseconds).
const TIME_LIMIT: Duration = Duration::from_secs(5);

/// The largest allocation a walk may make. The largest legitimate ones are a directory
/// listing (big-dir: about 160 KiB) and the walk's 64 KiB read buffer.
const ALLOCATION_LIMIT: usize = 1 << 20;

/// Passes allocations to the system allocator, and records the largest one made on a
/// thread that asked to be watched.
struct WatchingAllocator;

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}
static LARGEST_WATCHED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the bookkeeping touches only a const-initialized thread-local
// without a destructor and an atomic, neither of which allocates.
unsafe impl GlobalAlloc for WatchingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note_allocation(size: usize) {
    if WATCHED.with(Cell::get) {
        LARGEST_WATCHED.fetch_max(size, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: WatchingAllocator = WatchingAllocator;

/// A clean image and where its metadata lives.
struct Corpus {
    image: &'static [u8],
    /// Blocks read by a clean walk that start with the gfs2 magic.
    metadata: Vec<u64>,
}

fn corpus(image: &'static [u8]) -> Corpus {
    let recorder = common::counting::CountingDisk::new(PatchedDisk::new(image));
    let report = walk(&recorder);
    assert!(
        report.errors.is_empty(),
        "the clean image walks cleanly: {:?}",
        report.errors
    );

    let clean = PatchedDisk::new(image);
    let read: BTreeSet<u64> = recorder.take_reads().into_iter().collect();
    let metadata: Vec<u64> = read
        .into_iter()
        .filter(|&block| clean.get_be(block, 0, 4) == 0x0116_1970)
        .collect();
    Corpus { image, metadata }
}

fn corpus_4k() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| corpus(common::image_4k()))
}

fn corpus_empty() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| corpus(common::image_empty()))
}

/// A change to one or two metadata blocks, which are chosen by [`Index`] among them.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        block: Index,
        offset: Index,
        bit: u8,
    },
    SetByte {
        block: Index,
        offset: Index,
        value: u8,
    },
    /// Overwrites an aligned 64-bit word (a pointer or two 32-bit fields) with a block
    /// number of other metadata, or with `value`.
    SetWord {
        block: Index,
        offset: Index,
        target: Option<Index>,
        value: u64,
    },
    Zero {
        block: Index,
    },
    Swap {
        first: Index,
        second: Index,
    },
    Copy {
        from: Index,
        to: Index,
    },
}

/// Offsets into a block; three in four fall in the first 256 bytes, where the headers are.
fn offset_in(index: &Index, block_size: usize) -> usize {
    let raw = index.index(4 * block_size);
    if raw < 3 * block_size {
        raw % 256
    } else {
        raw % block_size
    }
}

impl Mutation {
    fn apply(&self, corpus: &Corpus, disk: &mut PatchedDisk<'_>) {
        let size = PatchedDisk::BLOCK_SIZE;
        let pick = |index: &Index| corpus.metadata[index.index(corpus.metadata.len())];

        match self {
            Self::FlipBit { block, offset, bit } => {
                disk.block_mut(pick(block))[offset_in(offset, size)] ^= 1 << (bit % 8);
            }
            Self::SetByte {
                block,
                offset,
                value,
            } => {
                disk.block_mut(pick(block))[offset_in(offset, size)] = *value;
            }
            Self::SetWord {
                block,
                offset,
                target,
                value,
            } => {
                let word = target.as_ref().map_or(*value, pick);
                disk.put_be(pick(block), offset_in(offset, size) & !7, word, 8);
            }
            Self::Zero { block } => disk.block_mut(pick(block)).fill(0),
            Self::Swap { first, second } => {
                let (first, second) = (pick(first), pick(second));
                let (a, b) = (disk.block(first), disk.block(second));
                disk.block_mut(first).copy_from_slice(&b);
                disk.block_mut(second).copy_from_slice(&a);
            }
            Self::Copy { from, to } => {
                let bytes = disk.block(pick(from));
                disk.block_mut(pick(to)).copy_from_slice(&bytes);
            }
        }
    }
}

fn small_edits() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(block, offset, bit)| Mutation::FlipBit { block, offset, bit }),
        (
            any::<Index>(),
            any::<Index>(),
            prop_oneof![Just(0u8), Just(0xFF), Just(1), any::<u8>()]
        )
            .prop_map(|(block, offset, value)| Mutation::SetByte {
                block,
                offset,
                value
            }),
    ]
}

fn word_edits() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1),
        0..20_000u64,
        any::<u64>()
    ];
    (
        any::<Index>(),
        any::<Index>(),
        proptest::option::of(any::<Index>()),
        value,
    )
        .prop_map(|(block, offset, target, value)| Mutation::SetWord {
            block,
            offset,
            target,
            value,
        })
}

fn block_edits() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(|block| Mutation::Zero { block }),
        (any::<Index>(), any::<Index>())
            .prop_map(|(first, second)| Mutation::Swap { first, second }),
        (any::<Index>(), any::<Index>()).prop_map(|(from, to)| Mutation::Copy { from, to }),
    ]
}

/// Applies `mutations` to a copy of the corpus image and walks it on a watched thread.
fn walk_mutated(corpus: &'static Corpus, mutations: Vec<Mutation>) -> WalkReport {
    let mut disk = PatchedDisk::new(corpus.image);
    for mutation in &mutations {
        mutation.apply(corpus, &mut disk);
    }

    let (sender, receiver) = mpsc::channel();
    let walker = std::thread::spawn(move || {
        WATCHED.with(|watched| watched.set(true));
        let report = walk(disk);
        WATCHED.with(|watched| watched.set(false));
        let _ = sender.send(report);
    });

    let started = Instant::now();
    match receiver.recv_timeout(TIME_LIMIT) {
        Ok(report) => {
            walker.join().expect("the walker finished");
            report
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("walking took over {TIME_LIMIT:?}: {mutations:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match walker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!(
                "the walker stopped without a report after {:?}",
                started.elapsed()
            ),
        },
    }
}

/// Runs `cases` mutated images of `corpus`, each with 1 to `max_mutations` mutations from
/// `strategy`, and checks that the mutations made a difference to enough of them.
fn run_cases(
    name: &str,
    corpus: &'static Corpus,
    strategy: impl Strategy<Value = Mutation>,
    max_mutations: usize,
    cases: u32,
) {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let cases_with_errors = AtomicUsize::new(0);
    let errors_seen = Arc::new(Mutex::new(BTreeSet::new()));
    let slowest = Mutex::new(Duration::ZERO);

    let mutations = proptest::collection::vec(strategy, 1..=max_mutations);
    runner
        .run(&mutations, |mutations| {
            let started = Instant::now();
            let report = walk_mutated(corpus, mutations);
            let elapsed = started.elapsed();
            let mut slowest = slowest.lock().unwrap();
            *slowest = (*slowest).max(elapsed);

            if !report.errors.is_empty() {
                cases_with_errors.fetch_add(1, Ordering::Relaxed);
            }
            errors_seen
                .lock()
                .unwrap()
                .extend(report.errors.into_keys());
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{name}: {failure}"));

    let largest = LARGEST_WATCHED.load(Ordering::Relaxed);
    let with_errors = cases_with_errors.load(Ordering::Relaxed);
    let errors_seen = errors_seen.lock().unwrap();
    eprintln!(
        "{name}: {cases} images, {with_errors} with errors, slowest walk {:?}, largest \
         allocation {largest} bytes; errors seen: {errors_seen:?}",
        slowest.lock().unwrap()
    );
    assert!(
        largest <= ALLOCATION_LIMIT,
        "{name}: an allocation of {largest} bytes"
    );
    assert!(
        with_errors as u32 >= cases / 10,
        "{name}: only {with_errors} of {cases} mutated images gave an error"
    );
}

#[test]
fn bit_flips_and_byte_writes_in_metadata() {
    run_cases("small edits", corpus_4k(), small_edits(), 8, 2500);
}

#[test]
fn pointers_overwritten_with_other_metadata_blocks() {
    run_cases("word edits", corpus_4k(), word_edits(), 4, 2500);
}

#[test]
fn zeroed_swapped_and_copied_blocks() {
    run_cases("block edits", corpus_4k(), block_edits(), 3, 2500);
}

#[test]
fn any_edit_of_the_mkfs_image() {
    let any_edit = prop_oneof![small_edits(), word_edits(), block_edits()];
    run_cases("mkfs image", corpus_empty(), any_edit, 6, 2500);
}

#[test]
fn the_metadata_list_covers_every_kind_of_metadata_block() {
    let corpus = corpus_4k();
    let clean = PatchedDisk::new(corpus.image);
    let types: BTreeSet<u64> = corpus
        .metadata
        .iter()
        .map(|&block| clean.get_be(block, 4, 4))
        .collect();

    // Superblock, rgrp header, dinode, indirect block, leaf, quota change (the data blocks
    // of the system file `quota_change0`).
    assert_eq!(types, BTreeSet::from([1, 2, 4, 5, 6, 14]));
    assert!(corpus.metadata.len() > 2700);
    assert_eq!(clean.block_count(), 16384);
}
