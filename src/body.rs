//! Response bodies: the text of a page, shared by the records cut from it, and the
//! pool of buffers bodies are read into.
//!
//! A page's records borrow its text until their batch is written, so a body lives a
//! few pages long and is then freed. Allocating a fresh 2 MB buffer for every page
//! made the kernel map and zero new memory each time (perf, 1M markets as JSON Lines:
//! page faults were ~5 % of the run's CPU, on the thread that receives). The buffer of
//! a freed body goes back to a small pool instead, and the next response is read into
//! it.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// Buffers kept for reuse, at most.
const POOL_BUFFERS: usize = 4;
/// Buffers larger than this (a 19 MB `/series` answer) are freed, not kept.
const POOL_MAX_BYTES: usize = 8 << 20;
/// Buffer sizes are rounded up to this, so pages of slightly different lengths fit
/// each other's buffers.
const ROUND_TO: usize = 256 << 10;

/// Empty buffers for response bodies, shared by the client and the bodies it read.
#[derive(Clone, Default)]
pub(crate) struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    /// An empty buffer with room for at least `capacity` bytes.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut pool| {
            let fits = pool.iter().position(|b| b.capacity() >= capacity)?;
            Some(pool.swap_remove(fits))
        });
        reused.unwrap_or_else(|| {
            let rounded = capacity
                .checked_next_multiple_of(ROUND_TO)
                .unwrap_or(capacity);
            Vec::with_capacity(rounded)
        })
    }

    /// Keeps `buffer` for a later [`BufferPool::take`], if the pool has room.
    fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > POOL_MAX_BYTES {
            return;
        }
        buffer.clear();
        if let Ok(mut pool) = self.0.lock()
            && pool.len() < POOL_BUFFERS
        {
            pool.push(buffer);
        }
    }
}

/// The text of one response, already checked to be UTF-8. Its buffer returns to the
/// pool it came from when the last record holding it is gone.
pub(crate) struct PageText {
    text: String,
    pool: Option<BufferPool>,
}

impl PageText {
    /// Text whose buffer goes back to `pool` when dropped.
    pub(crate) fn pooled(text: String, pool: &BufferPool) -> Arc<PageText> {
        Arc::new(PageText {
            text,
            pool: Some(pool.clone()),
        })
    }

    /// Text with no pool (tests, one-off parses).
    #[cfg(test)]
    pub(crate) fn alone(text: String) -> Arc<PageText> {
        Arc::new(PageText { text, pool: None })
    }
}

impl Deref for PageText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Debug for PageText {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "PageText({} bytes)", self.text.len())
    }
}

impl Drop for PageText {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.text).into_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_page_gives_its_buffer_back() {
        let pool = BufferPool::default();
        let mut buffer = pool.take(1000);
        assert!(buffer.capacity() >= ROUND_TO);
        buffer.extend_from_slice(b"{\"a\":1}");
        let address = buffer.as_ptr();
        let text = String::from_utf8(buffer).expect("utf-8");
        let page = PageText::pooled(text, &pool);
        let shared = Arc::clone(&page);
        drop(page);
        assert_eq!(&**shared, "{\"a\":1}");
        assert!(pool.0.lock().expect("lock").is_empty(), "still in use");
        drop(shared);
        let again = pool.take(1000);
        assert_eq!(again.as_ptr(), address, "the same buffer, reused");
        assert!(again.is_empty());
        // A larger request than any kept buffer gets a new one.
        assert!(pool.take(ROUND_TO * 2).capacity() >= ROUND_TO * 2);
    }

    #[test]
    fn the_pool_keeps_few_and_small_buffers() {
        let pool = BufferPool::default();
        for _ in 0..POOL_BUFFERS + 2 {
            pool.give(Vec::with_capacity(16));
        }
        pool.give(Vec::with_capacity(POOL_MAX_BYTES + 1));
        let kept = pool.0.lock().expect("lock");
        assert_eq!(kept.len(), POOL_BUFFERS);
        assert!(kept.iter().all(|b| b.capacity() <= POOL_MAX_BYTES));
    }
}
