//! Parent-death detection for the processes `serve` starts, by an inherited
//! pipe.
//!
//! The master creates one pipe and keeps its write end open for its whole
//! life without ever writing to it. A hibernate process gets the read end as
//! its standard input (the write end is close-on-exec, so no child holds
//! it). The kernel closes the write end when the master exits, however it
//! dies, so the child's read returns end-of-file. An IMAP worker needs no
//! extra pipe: its standard input is its channel to the master, whose other
//! end only the master holds, and it stops when that channel closes.
//!
//! This replaces Linux's `PR_SET_PDEATHSIG`, which fires when the *thread*
//! that forked the child exits (tokio retires idle threads), not when the
//! process does, and which the BSDs do not have.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;

/// The master's side: the pipe whose write end lives as long as the process.
#[derive(Debug)]
pub struct Lifeline {
    /// Held, never written: closed by the kernel when the master exits.
    _write: OwnedFd,
    read: OwnedFd,
}

impl Lifeline {
    /// Creates the pipe (both ends close-on-exec).
    ///
    /// # Errors
    /// The pipe cannot be created (descriptor limit).
    pub fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Self { _write: write, read })
    }

    /// The pipe passed on by the previous generation in a restart: its
    /// children keep watching the same pipe, whose write end lives on here.
    pub fn from_fds(read: OwnedFd, write: OwnedFd) -> Self {
        Self { _write: write, read }
    }

    /// Both ends (read, write), to pass on to the next generation.
    pub fn fds(&self) -> (std::os::fd::BorrowedFd<'_>, std::os::fd::BorrowedFd<'_>) {
        (self.read.as_fd(), self._write.as_fd())
    }

    /// The read end, to be a child's standard input.
    ///
    /// # Errors
    /// The descriptor cannot be duplicated (descriptor limit).
    pub fn child_stdin(&self) -> io::Result<Stdio> {
        Ok(Stdio::from(self.read.try_clone()?))
    }
}

/// The child's side: takes the lifeline from standard input.
///
/// # Errors
/// Standard input is not a pipe (the process was not started by `serve`).
pub fn take_from_stdin() -> io::Result<OwnedFd> {
    let stdin = std::io::stdin();
    let is_pipe = rustix::fs::fstat(stdin.as_fd())
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Fifo);
    if !is_pipe {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "standard input is not the master's lifeline pipe; this process is started by `dormouse serve`",
        ));
    }
    stdin.as_fd().try_clone_to_owned()
}

/// Blocks until the master is gone (end-of-file or an error on the read
/// end). Nothing is ever written; stray bytes are ignored.
pub fn wait_for_parent_exit(fd: OwnedFd) {
    let mut pipe = std::fs::File::from(fd);
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Runs `on_exit` on a small thread once the master is gone.
///
/// # Errors
/// The thread cannot be started.
pub fn on_parent_exit(fd: OwnedFd, on_exit: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new().name("lifeline".into()).spawn(move || {
        wait_for_parent_exit(fd);
        on_exit();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_returns_when_the_write_end_closes() {
        let lifeline = Lifeline::new().unwrap();
        let read = lifeline.read.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        on_parent_exit(read, move || tx.send(()).unwrap()).unwrap();
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "fired while the writer lives");
        drop(lifeline);
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("fired after the writer closed");
    }
}
