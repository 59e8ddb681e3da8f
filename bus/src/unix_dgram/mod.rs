//! The broker-less default transport: UNIX datagram sockets in a private folder.
//!
//! Every subscribing process binds one datagram socket `<pid>-<random>.sock`
//! in the bus folder (mode 0700, owned by the server's user, so no other
//! local user can inject events). A publisher keeps one connected,
//! non-blocking datagram socket per receiver and sends every event to every
//! receiver; the list is refreshed whenever the folder's mtime changes (and
//! while that mtime is too recent to trust), and a receiver whose socket has
//! no owner any more (`ECONNREFUSED`) is removed and its file unlinked.
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
mod publisher;
mod subscriber;

pub use bus_dir::ensure_bus_dir;
pub use publisher::UnixPublisher;
pub use subscriber::UnixSubscriber;
