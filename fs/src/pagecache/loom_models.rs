//! loom model of a cached-only read racing an invalidation.

use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::*;

/// A file of two pages whose every byte is its version.
struct Version(u8);

impl AddressSpaceOps for Version {
    type Error = ();

    fn read_page(&self, _index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), ()> {
        page.fill(self.0);
        Ok(())
    }
}

const SIZE: usize = 2 * PAGE_SIZE;

/// One thread invalidates the mapping and reads version 2 in (as a node does after another
/// wrote); the other reads cached-only. The reader never sees both versions, and once the
/// invalidation returned, never version 1.
#[test]
fn loom_cached_read_racing_an_invalidation_never_sees_an_old_page_later() {
    loom::model(|| {
        let cache = Arc::new(PageCache::new(4));
        let mapping = Arc::new(Mapping::new());
        mapping.set_size(SIZE as u64);
        let mut buf = alloc::vec![0; SIZE];
        cache
            .read(&mapping, &Version(1), 0, &mut buf, ReadFlags::NONE)
            .unwrap();
        let invalidated = Arc::new(AtomicBool::new(false));

        let writer = {
            let (cache, mapping, invalidated) =
                (cache.clone(), mapping.clone(), invalidated.clone());
            thread::spawn(move || {
                cache.invalidate(&mapping);
                invalidated.store(true, Ordering::SeqCst);
                mapping.set_size(SIZE as u64);
                let mut buf = alloc::vec![0; SIZE];
                cache
                    .read(&mapping, &Version(2), 0, &mut buf, ReadFlags::NONE)
                    .unwrap();
            })
        };

        let after_invalidation = invalidated.load(Ordering::SeqCst);
        let mut buf = alloc::vec![0; SIZE];
        match cache.read(&mapping, &Version(9), 0, &mut buf, ReadFlags::CACHED) {
            Ok(outcome) => {
                let copied = &buf[..outcome.bytes];
                assert!(
                    copied.iter().all(|&b| b == copied[0]),
                    "a read mixed versions"
                );
                if after_invalidation {
                    assert_eq!(copied[0], 2, "an old page after the invalidation returned");
                }
            }
            Err(error) => assert_eq!(error, ReadError::NotCached),
        }
        writer.join().unwrap();
    });
}
