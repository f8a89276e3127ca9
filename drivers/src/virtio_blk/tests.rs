//! Host tests of the virtio-blk driver against a fake device.
//!
//! The fake device runs on its own thread over a split virtqueue in host memory, as QEMU
//! would: it takes every request the driver made available, completes the batch in reverse
//! order (so completions arrive out of order), serves reads from an in-memory disk and fails
//! those that touch a "bad" sector. It records how many requests were in flight at once and
//! how large each was.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::vec::Vec;

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::*;
use crate::block::BlockDevice;

/// `VIRTIO_F_VERSION_1`.
const VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_INDIRECT_DESC`.
const INDIRECT_DESC: u64 = 1 << 28;

const DESC_F_NEXT: u16 = 1;
const DESC_F_INDIRECT: u16 = 4;

/// DMA in host memory: physical addresses are the host's virtual addresses.
struct HostDma;

fn page_layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).unwrap()
}

// SAFETY: `dma_alloc` returns fresh zeroed page-aligned memory from the global allocator, owned
// by the caller until `dma_dealloc`; `share` hands out the buffer's own address, which is
// what the fake device uses as a physical address.
unsafe impl Hal for HostDma {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let pointer = NonNull::new(unsafe { alloc_zeroed(page_layout(pages)) }).unwrap();
        (pointer.as_ptr() as PhysAddr, pointer)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: `vaddr` came from `dma_alloc` with the same page count.
        unsafe { dealloc(vaddr.as_ptr(), page_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(_paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        unreachable!("the fake transport has no MMIO")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Where the driver put the queue.
#[derive(Clone, Copy, Default)]
struct QueueAddresses {
    size: u32,
    descriptors: u64,
    avail: u64,
    used: u64,
}

/// What the device and the test share.
struct DeviceState {
    disk: Vec<u8>,
    bad_sector: Option<u64>,
    /// How many requests the device waits for before serving a batch.
    batch: u32,
    queue: Mutex<Option<QueueAddresses>>,
    stop: AtomicBool,
    /// Sizes of the requests served, in sectors.
    request_sectors: Mutex<Vec<u64>>,
    /// The most requests seen available at once.
    most_in_flight: AtomicU32,
}

/// The transport side of the fake device.
struct FakeTransport {
    features: u64,
    status: DeviceStatus,
    state: Arc<DeviceState>,
}

impl Transport for FakeTransport {
    fn device_type(&self) -> DeviceType {
        DeviceType::Block
    }

    fn read_device_features(&mut self) -> u64 {
        self.features
    }

    fn write_driver_features(&mut self, _driver_features: u64) {}

    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        64
    }

    fn notify(&mut self, _queue: u16) {}

    fn get_status(&self) -> DeviceStatus {
        self.status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.status = status;
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        _queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        *self.state.queue.lock().unwrap() = Some(QueueAddresses {
            size,
            descriptors,
            avail: driver_area,
            used: device_area,
        });
    }

    fn queue_unset(&mut self, _queue: u16) {
        *self.state.queue.lock().unwrap() = None;
    }

    fn queue_used(&mut self, _queue: u16) -> bool {
        self.state.queue.lock().unwrap().is_some()
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::empty()
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        // Only `capacity` (sectors, little-endian u64 at offset 0) matters to the driver.
        let mut config = [0u8; 64];
        let sectors = (self.state.disk.len() / SECTOR_SIZE) as u64;
        config[..8].copy_from_slice(&sectors.to_le_bytes());
        let bytes = config
            .get(offset..offset + size_of::<T>())
            .ok_or(virtio_drivers::Error::ConfigSpaceTooSmall)?;
        Ok(T::read_from_bytes(bytes).unwrap())
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::Unsupported)
    }
}

/// One descriptor as it sits in memory.
#[derive(Clone, Copy)]
struct Descriptor {
    address: u64,
    len: u32,
    flags: u16,
    next: u16,
}

mod memory {
    //! The fake device's view of guest memory: the host's, at the addresses the driver gave.

    use std::sync::atomic::{AtomicU16, AtomicU32};

    use super::Descriptor;

    /// The 16-bit ring field at `address`.
    pub(super) fn u16_field(address: u64) -> &'static AtomicU16 {
        // SAFETY: the driver put a ring here, whose fields are atomics (as `virtio-drivers`
        // declares them), 2-aligned, alive until the queue is unset after the test's reads.
        unsafe { AtomicU16::from_ptr(address as *mut u16) }
    }

    /// The 32-bit used-ring field at `address`.
    pub(super) fn u32_field(address: u64) -> &'static AtomicU32 {
        // SAFETY: as for `u16_field`; used-ring elements are two 4-aligned u32s.
        unsafe { AtomicU32::from_ptr(address as *mut u32) }
    }

    /// The descriptor at `address`.
    pub(super) fn descriptor(address: u64) -> Descriptor {
        // SAFETY: the driver wrote this descriptor before publishing its chain through the
        // available ring's index, which the device read with acquire ordering.
        unsafe {
            let pointer = address as *const u8;
            Descriptor {
                address: (pointer as *const u64).read_unaligned(),
                len: (pointer.add(8) as *const u32).read_unaligned(),
                flags: (pointer.add(12) as *const u16).read_unaligned(),
                next: (pointer.add(14) as *const u16).read_unaligned(),
            }
        }
    }

    /// The `len` bytes at `address`, which the driver lent to the device.
    pub(super) fn bytes(address: u64, len: usize) -> &'static mut [u8] {
        // SAFETY: a buffer of a request the device has not completed: the driver does not
        // touch it until the used ring says so.
        unsafe { std::slice::from_raw_parts_mut(address as *mut u8, len) }
    }
}

/// Serves requests until told to stop.
fn run_device(state: Arc<DeviceState>) {
    /// Polls without a new request after which a short batch is served anyway.
    const IDLE_POLLS: u32 = 10_000;

    let mut last_avail: u16 = 0;
    let mut idle_polls = 0;
    let mut seen_waiting = 0;
    while !state.stop.load(Ordering::Acquire) {
        let Some(queue) = *state.queue.lock().unwrap() else {
            thread::yield_now();
            continue;
        };
        let avail_idx = memory::u16_field(queue.avail + 2).load(Ordering::Acquire);
        let waiting = avail_idx.wrapping_sub(last_avail);
        // Hold back a batch until `batch` requests are waiting, or the driver has stopped
        // adding any: the first batch of a large read shows how many it puts in flight.
        if waiting == 0 || (u32::from(waiting) < state.batch && idle_polls < IDLE_POLLS) {
            idle_polls = if waiting == seen_waiting {
                idle_polls + 1
            } else {
                0
            };
            seen_waiting = waiting;
            thread::yield_now();
            continue;
        }
        idle_polls = 0;
        state
            .most_in_flight
            .fetch_max(u32::from(waiting), Ordering::Relaxed);

        let mut heads = Vec::new();
        while last_avail != avail_idx {
            let slot = u64::from(last_avail % queue.size as u16);
            heads.push(memory::u16_field(queue.avail + 4 + 2 * slot).load(Ordering::Relaxed));
            last_avail = last_avail.wrapping_add(1);
        }
        // Complete the batch backwards: the driver must match completions by token.
        for head in heads.into_iter().rev() {
            let written = serve(&state, &queue, head);
            let used_idx = memory::u16_field(queue.used + 2);
            let index = used_idx.load(Ordering::Relaxed);
            let element = queue.used + 4 + 8 * u64::from(index % queue.size as u16);
            memory::u32_field(element).store(u32::from(head), Ordering::Relaxed);
            memory::u32_field(element + 4).store(written, Ordering::Relaxed);
            used_idx.store(index.wrapping_add(1), Ordering::Release);
        }
    }
}

/// Serves the read whose chain starts at descriptor `head`; returns the bytes written.
fn serve(state: &DeviceState, queue: &QueueAddresses, head: u16) -> u32 {
    let first = memory::descriptor(queue.descriptors + 16 * u64::from(head));
    let mut chain = Vec::new();
    if first.flags & DESC_F_INDIRECT != 0 {
        for index in 0..first.len / 16 {
            chain.push(memory::descriptor(first.address + 16 * u64::from(index)));
        }
    } else {
        let mut descriptor = first;
        chain.push(descriptor);
        while descriptor.flags & DESC_F_NEXT != 0 {
            descriptor = memory::descriptor(queue.descriptors + 16 * u64::from(descriptor.next));
            chain.push(descriptor);
        }
    }

    // Header (type, reserved, sector), data buffers, status byte.
    let header = memory::bytes(chain[0].address, 16);
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let (status, data) = chain[1..].split_last().unwrap();
    let mut offset = sector as usize * SECTOR_SIZE;
    let mut sectors = 0;
    let mut failed = false;
    for buffer in data {
        let bytes = memory::bytes(buffer.address, buffer.len as usize);
        bytes.copy_from_slice(&state.disk[offset..offset + bytes.len()]);
        offset += bytes.len();
        sectors += bytes.len() as u64 / SECTOR_SIZE as u64;
    }
    if let Some(bad) = state.bad_sector {
        failed = (sector..sector + sectors).contains(&bad);
    }
    state.request_sectors.lock().unwrap().push(sectors);
    memory::bytes(status.address, 1)[0] = u8::from(failed);
    (sectors as usize * SECTOR_SIZE + 1) as u32
}

/// A disk whose every sector holds its own number, a device thread serving it, and a driver.
struct Fixture {
    device: VirtioBlock<HostDma, FakeTransport>,
    state: Arc<DeviceState>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Fixture {
    fn new(sectors: usize, features: u64, bad_sector: Option<u64>) -> Self {
        Self::with_batch(sectors, features, bad_sector, 1)
    }

    fn with_batch(sectors: usize, features: u64, bad_sector: Option<u64>, batch: u32) -> Self {
        let disk = (0..sectors)
            .flat_map(|sector| {
                let mut bytes = [0u8; SECTOR_SIZE];
                bytes[..8].copy_from_slice(&(sector as u64).to_le_bytes());
                bytes
            })
            .collect();
        let state = Arc::new(DeviceState {
            disk,
            bad_sector,
            batch,
            queue: Mutex::new(None),
            stop: AtomicBool::new(false),
            request_sectors: Mutex::new(Vec::new()),
            most_in_flight: AtomicU32::new(0),
        });
        let transport = FakeTransport {
            features,
            status: DeviceStatus::empty(),
            state: state.clone(),
        };
        let device = VirtioBlock::new("virtio7", transport).unwrap();
        let thread = Some(thread::spawn({
            let state = state.clone();
            move || run_device(state)
        }));
        Self {
            device,
            state,
            thread,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn check_sectors(buf: &[u8], first: u64) {
    for (index, sector) in buf.chunks(SECTOR_SIZE).enumerate() {
        let number = u64::from_le_bytes(sector[..8].try_into().unwrap());
        assert_eq!(number, first + index as u64, "sector {index} of the read");
    }
}

#[test]
fn a_large_read_goes_out_as_several_large_requests_in_flight() {
    // Without indirect descriptors a request takes three of the 16 descriptors.
    for (features, queue_holds) in [(VERSION_1, 5), (VERSION_1 | INDIRECT_DESC, MAX_IN_FLIGHT)] {
        let fixture = Fixture::with_batch(8192, features, None, queue_holds as u32);
        let mut buf = std::vec![0u8; 2 << 20];

        fixture.device.read_blocks(100, &mut buf).unwrap();

        check_sectors(&buf, 100);
        let sizes = fixture.state.request_sectors.lock().unwrap().clone();
        let largest = (MAX_REQUEST_BYTES / SECTOR_SIZE) as u64;
        assert_eq!(sizes.len(), (2 << 20) / MAX_REQUEST_BYTES, "{sizes:?}");
        assert!(sizes.iter().all(|&size| size == largest), "{sizes:?}");
        assert_eq!(
            fixture.state.most_in_flight.load(Ordering::Relaxed),
            queue_holds as u32,
            "requests in flight at once"
        );
    }
}

#[test]
fn a_short_read_is_one_request() {
    let fixture = Fixture::new(64, VERSION_1, None);
    let mut buf = [0u8; 3 * SECTOR_SIZE];

    fixture.device.read_blocks(61, &mut buf).unwrap();

    check_sectors(&buf, 61);
    assert_eq!(*fixture.state.request_sectors.lock().unwrap(), [3]);
}

#[test]
fn a_failed_request_names_the_device_and_its_sectors() {
    let fixture = Fixture::new(4096, VERSION_1 | INDIRECT_DESC, Some(1000));
    let mut buf = std::vec![0u8; 1 << 20];

    let error = fixture.device.read_blocks(0, &mut buf).unwrap_err();

    assert_eq!(
        error,
        VirtioBlockError::Read {
            device: "virtio7",
            sector: 768,
            count: 256,
            reason: ReadFailure::IoError,
        }
    );
    assert_eq!(error.device(), "virtio7");
    assert_eq!(
        std::format!("{error}"),
        "virtio7: reading 256 sectors at sector 768 failed: I/O error"
    );

    // The device keeps working for reads that avoid the bad sector.
    let mut after = std::vec![0u8; 8 * SECTOR_SIZE];
    fixture.device.read_blocks(2000, &mut after).unwrap();
    check_sectors(&after, 2000);
}

#[test]
fn rejects_partial_sectors_and_reads_past_the_end() {
    let fixture = Fixture::new(16, VERSION_1, None);

    assert_eq!(
        fixture.device.read_blocks(0, &mut [0u8; 100]),
        Err(VirtioBlockError::PartialSector {
            device: "virtio7",
            len: 100
        })
    );
    assert_eq!(
        fixture.device.read_blocks(15, &mut [0u8; 1024]),
        Err(VirtioBlockError::OutOfRange {
            device: "virtio7",
            first: 15,
            count: 2,
            capacity: 16
        })
    );
    assert!(matches!(
        fixture.device.read_blocks(u64::MAX, &mut [0u8; 512]),
        Err(VirtioBlockError::OutOfRange { .. })
    ));
    assert_eq!(fixture.device.block_count(), 16);
    assert!(fixture.state.request_sectors.lock().unwrap().is_empty());
}
