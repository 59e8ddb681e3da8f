//! The broker-less default transport: UNIX datagram sockets in a private folder.
//!
//! Every subscribing process binds one datagram socket `<pid>-<random>.sock`
//! in the bus folder (mode 0700, owned by the server's user, so no other
//! local user can inject events). A publisher keeps one connected,
//! non-blocking datagram socket per receiver; the list is refreshed whenever
//! the folder's mtime changes (and while that mtime is too recent to trust),
//! and a receiver whose socket has no owner any more (`ECONNREFUSED`) is
//! removed and its file unlinked (with its interest file).
//!
//! # Routing
//!
//! Next to its socket each subscriber keeps an *interest file*
//! `<socket>.interest` ([`interest`] describes the layout): a 16-byte
//! versioned header (with a wildcard flag) and a bitmap of 2^16 bits, one
//! per bucket of user names (first 8 bytes of SHA-256 of the name). The
//! subscriber writes it before binding the socket, counts subscribed users
//! per bit in memory, and `pwrite`s the changed byte *before*
//! [`UnixSubscriber::subscribe`] returns; it clears the byte's bit when the
//! last subscribed user of that bit unsubscribes. A publisher keeps the file
//! open next to the connected socket; with `interest_watch` on it also
//! keeps a copy of its bitmap (off by default: one inotify instance per
//! publishing process, from the same per-user budget of 128 the Maildir
//! watchers need). An inotify
//! watch on the bus folder (opened before any file is read) reports each
//! modified interest file; the kernel queues that report inside the
//! subscriber's `pwrite`, so it is queued before `subscribe` returns. Per
//! event the publisher drains the watch once (one non-blocking `read`,
//! after the event was committed), re-reads the bitmaps of the files named
//! there, and decides every receiver from its copy: an event whose change
//! was committed after `subscribe` returned is always sent. Without the
//! copy (the default, or inotify limits reached) it `pread`s the one byte holding the user's bit per
//! event and receiver, believing a bit seen set for 10 ms (a false positive
//! only costs a datagram the subscriber filters out; a clear bit is never
//! cached). A receiver without an interest file (an older version) or with
//! one that is short, garbage or of another version gets every event, as
//! before, and the problem is logged. A subscriber that cannot update its
//! file truncates it, which publishers also take as "everything".
//! [`UnixSubscriber::set_receive_all`] sets the wildcard (and every bit).
//! Sequence numbers count the frames sent to one receiver, so events
//! skipped for it never look like a gap.
//!
//! # Full receivers
//!
//! Linux lets a receiving socket queue only `net.unix.max_dgram_qlen`
//! datagrams (10 here); a non-blocking sender then gets `EAGAIN`. Because each
//! receiver has its own sending socket, datagrams stuck in a stopped
//! receiver's queue are charged to that socket's buffer only, and one slow
//! receiver never silences the others. On `EAGAIN` the publisher keeps the
//! events for that receiver in a bounded batch (one frame, at most
//! `max_frame_bytes`), retried on the next publish and by a helper thread
//! that waits for the socket to become writable. When the batch would
//! overflow it is dropped and the receiver's frame sequence number skips one,
//! so the receiver detects the gap and asks the application to resync from
//! storage.

mod bus_dir;
pub mod interest;
mod interest_view;
mod interest_watch;
mod publisher;
mod subscriber;

pub use bus_dir::ensure_bus_dir;
pub use publisher::UnixPublisher;
pub use subscriber::UnixSubscriber;
