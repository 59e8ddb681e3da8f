//! Knowing when every delivery one source message produced is final.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Callback = Box<dyn FnOnce() + Send>;

/// Counts the deliveries of one source message still open; runs a callback
/// (the JetStream acknowledgement) when the last one is final. It starts
/// with one count held by the dispatcher, released after it queued every
/// delivery, so a message that matches nothing completes at once.
pub struct Completion {
    remaining: AtomicUsize,
    on_done: Mutex<Option<Callback>>,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion").field("remaining", &self.remaining.load(Ordering::Relaxed)).finish()
    }
}

impl Completion {
    /// A completion holding the dispatcher's count.
    pub fn new(on_done: impl FnOnce() + Send + 'static) -> Arc<Self> {
        Arc::new(Completion { remaining: AtomicUsize::new(1), on_done: Mutex::new(Some(Box::new(on_done))) })
    }

    /// One more delivery to wait for.
    pub fn add(&self) {
        self.remaining.fetch_add(1, Ordering::SeqCst);
    }

    /// One delivery (or the dispatcher's count) is final.
    pub fn finish(&self) {
        if self.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let callback = self.on_done.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(cb) = callback {
                cb();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn fires_once_after_the_last() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let c = Completion::new(move || assert!(!f.swap(true, Ordering::SeqCst)));
        c.add();
        c.add();
        c.finish();
        c.finish();
        assert!(!fired.load(Ordering::SeqCst));
        c.finish();
        assert!(fired.load(Ordering::SeqCst));
    }
}
