//! The worker's tokio driver around one authenticated [`Session`].
//!
//! The loop: let the session run until it needs input (storage calls block,
//! so that part runs under `block_in_place`, in one of the worker's
//! [`StorageSlots`]), write its output, then wait for
//! whichever comes first: client bytes, a change event for the user (from
//! the [`super::wakeup`] registry), or the session's deadline (IDLE timeout,
//! autologout). Nothing polls: an idle session is one parked task.

use std::io;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::session::{Session, SessionEvent};

use super::client_stream::{ClientStream, READ_CHUNK};
use super::counters::Counters;
use super::deflate_layer::DeflateLayer;
use super::hibernation::Parking;
use super::live_sessions::LiveRegistration;
use super::shutdown::SHUTDOWN_BYE;
use super::storage_slots::StorageSlots;
use super::wakeup::Registration;

/// Output collected before it is written, so one large response does not
/// sit in memory in full next to the next one.
const WRITE_BATCH: usize = 256 * 1024;

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The session said so (LOGOUT, timeout BYE, fatal protocol error).
    Closed,
    /// The client closed the connection.
    ClientGone,
    /// Reading or writing failed.
    IoError,
    /// Parked in a hibernate process (which now owns the connection).
    Hibernated {
        /// Index of the hibernate process.
        process: u32,
    },
    /// The worker is stopping: the client got `* BYE` and was closed.
    ShutDown,
    /// The administrator kicked the session (`dormouse kick`): the client
    /// got [`KICK_BYE`] and was closed.
    Kicked,
    /// A restart could not move the session (TLS relayed by the master
    /// that is leaving): the client got [`RESTART_BYE`] and was closed.
    CannotMove,
}

/// What a session that cannot survive a restart is told.
pub const RESTART_BYE: &[u8] = b"* BYE [UNAVAILABLE] Server restarting, please reconnect\r\n";

/// What a kicked session is told (the hibernate processes use the same words).
pub const KICK_BYE: &[u8] = hibernate::driver::control::KICK_BYE;

/// Feeds queued change events into the session.
fn deliver_events(session: &mut Session, registration: &Registration) {
    let pending = registration.inbox().take();
    for event in &pending.events {
        session.on_mailbox_event(event);
    }
    if pending.overflowed {
        session.poke_changes();
    }
}

/// What the session asked for after a run.
enum Step {
    /// Write this, then run again.
    Write(Vec<u8>),
    /// Write this (may be empty), then wait for input or the deadline.
    WriteThenWait(Vec<u8>, Instant),
    /// Write this, then close.
    WriteThenClose(Vec<u8>),
    /// Write this (ending with the `OK` to COMPRESS), then compress;
    /// the bytes are client input received after the command.
    WriteThenCompress(Vec<u8>, Vec<u8>),
}

/// Runs the session until it needs input, closes, or has a batch of output.
fn run_session(session: &mut Session) -> Step {
    let mut out = Vec::new();
    loop {
        match session.next(Instant::now()) {
            SessionEvent::Output(bytes) => {
                if out.is_empty() {
                    out = bytes;
                } else {
                    out.extend_from_slice(&bytes);
                }
                if out.len() >= WRITE_BATCH {
                    return Step::Write(out);
                }
            }
            SessionEvent::NeedMoreInput { deadline } => return Step::WriteThenWait(out, deadline),
            SessionEvent::Close => return Step::WriteThenClose(out),
            SessionEvent::StartCompression { compressed_input } => return Step::WriteThenCompress(out, compressed_input),
            SessionEvent::StartTls | SessionEvent::Authenticated(_) | SessionEvent::VerifyLogin(_) => {
                // Neither can happen after authentication (no STARTTLS is
                // offered there, and a worker session does not hand over).
                tracing::error!("worker session asked for STARTTLS or a hand-over; closing");
                out.extend_from_slice(b"* BYE Internal server error.\r\n");
                return Step::WriteThenClose(out);
            }
        }
    }
}

/// Reads what is ready into the session (inflated if COMPRESS is active);
/// returns bytes read (0 = EOF). Invalid compressed data is an
/// `InvalidData` error.
fn read_into(stream: &mut ClientStream, session: &mut Session, deflate: Option<&mut DeflateLayer>) -> io::Result<usize> {
    let mut buf = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut buf)?;
    if n > 0 {
        enqueue(session, deflate, &buf[..n])?;
    }
    Ok(n)
}

/// Gives client bytes to the session, through the inflater if compressed.
fn enqueue(session: &mut Session, deflate: Option<&mut DeflateLayer>, bytes: &[u8]) -> io::Result<()> {
    match deflate {
        None => session.enqueue_input(bytes),
        Some(d) => {
            let mut plain = Vec::new();
            d.inflate(bytes, &mut plain).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            session.enqueue_input(&plain);
        }
    }
    Ok(())
}

/// The connection's writing side: the stream and, once COMPRESS is
/// active, its deflater (each burst is sync-flushed).
struct Writer<'a> {
    stream: &'a mut ClientStream,
    deflate: Option<Box<DeflateLayer>>,
}

async fn write(w: &mut Writer<'_>, bytes: &[u8], counters: &Counters) -> io::Result<()> {
    let compressed;
    let bytes = match w.deflate.as_mut() {
        Some(d) if !bytes.is_empty() || d.has_unsent() => {
            compressed = d.compress(bytes);
            &compressed[..]
        }
        _ => bytes,
    };
    if bytes.is_empty() {
        return Ok(());
    }
    w.stream.write_all(bytes).await?;
    counters.add_bytes_out(bytes.len() as u64);
    Ok(())
}

/// The client's compressed stream is invalid: log, BYE (our direction
/// still works), close.
async fn bad_compressed_input(w: &mut Writer<'_>, counters: &Counters, error: &io::Error) -> SessionEnd {
    tracing::info!(%error, "bad compressed data from the client; closing");
    say_bye(w, counters, b"* BYE Invalid compressed data.\r\n", SessionEnd::Closed).await
}

/// What every session of a worker shares: its counters and its slots for
/// blocking steps.
#[derive(Debug, Clone, Copy)]
pub struct WorkerResources<'a> {
    /// The worker's counters.
    pub counters: &'a Counters,
    /// The worker's slots for blocking session steps.
    pub slots: &'a StorageSlots,
}

/// Serves `session` on `stream` until it ends; with `parking`, a quiet
/// session is parked in a hibernate process (see [`super::hibernation`]).
/// When [`Stopping::signal`] turns true the session gets [`SHUTDOWN_BYE`]
/// as soon as it waits for input with no command in progress, i.e. after the
/// command being executed or received has been answered, or when
/// [`Stopping::grace`] is over. A session `live` says was kicked goes the
/// same way, with [`KICK_BYE`].
#[allow(clippy::too_many_arguments)] // One call site (worker.rs); a struct would only rename the list.
pub async fn drive(
    mut session: Session,
    mut stream: ClientStream,
    registration: Registration,
    worker: WorkerResources<'_>,
    parking: Option<Parking<'_>>,
    stopping: Stopping,
    live: &mut LiveRegistration,
    deflate: Option<Box<DeflateLayer>>,
) -> SessionEnd {
    let WorkerResources { counters, slots } = worker;
    let mut w = Writer { stream: &mut stream, deflate };
    // Compressed bytes a hibernate process could not write go first.
    if write(&mut w, b"", counters).await.is_err() {
        return SessionEnd::IoError;
    }
    let Stopping { signal: mut stopping, grace, mut detach } = stopping;
    let mut kicked = live.kicked();
    // Set once the stop is seen: when the BYE goes out at the latest.
    let mut bye_at: Option<Instant> = None;
    let mut last_input = Instant::now();
    let mut idle_started: Option<Instant> = None;
    let mut not_before = Instant::now();
    loop {
        deliver_events(&mut session, &registration);
        let step = slots.run(|| run_session(&mut session)).await;
        counters.add_commands(match &step {
            Step::Write(b) | Step::WriteThenWait(b, _) | Step::WriteThenClose(b) | Step::WriteThenCompress(b, _) => {
                count_tagged_responses(b)
            }
        });
        let deadline = match step {
            Step::Write(bytes) => {
                if write(&mut w, &bytes, counters).await.is_err() {
                    return SessionEnd::IoError;
                }
                continue;
            }
            Step::WriteThenClose(bytes) => {
                let _ = write(&mut w, &bytes, counters).await;
                w.stream.shutdown().await;
                return SessionEnd::Closed;
            }
            Step::WriteThenCompress(bytes, compressed_input) => {
                // The OK itself goes out uncompressed (RFC 4978 §3).
                if write(&mut w, &bytes, counters).await.is_err() {
                    return SessionEnd::IoError;
                }
                let mut layer = Box::new(DeflateLayer::new());
                if let Err(e) = enqueue(&mut session, Some(&mut layer), &compressed_input) {
                    w.deflate = Some(layer);
                    return bad_compressed_input(&mut w, counters, &e).await;
                }
                w.deflate = Some(layer);
                continue;
            }
            Step::WriteThenWait(bytes, deadline) => {
                if write(&mut w, &bytes, counters).await.is_err() {
                    return SessionEnd::IoError;
                }
                deadline
            }
        };
        live.note(session.selected_mailbox(), session.is_idle());
        let kick = *kicked.borrow();
        if *stopping.borrow() || kick {
            let at = super::shutdown::bye_deadline(&mut bye_at, grace);
            if !session.command_in_progress() || Instant::now() >= at {
                // A stop wins: its BYE names the real reason for the client.
                if kick && !*stopping.borrow() {
                    return say_bye(&mut w, counters, KICK_BYE, SessionEnd::Kicked).await;
                }
                return say_bye(&mut w, counters, SHUTDOWN_BYE, SessionEnd::ShutDown).await;
            }
        }
        let detaching = *detach.borrow();
        if detaching && bye_at.is_none() && !session.command_in_progress() {
            // A restart: this session cannot move with its connection.
            if parking.as_ref().is_some_and(|p| matches!(p.facts.transport, crate::handover::Transport::TlsProxied { .. })) {
                return say_bye(&mut w, counters, RESTART_BYE, SessionEnd::CannotMove).await;
            }
        }
        let park_at = parking.as_ref().filter(|_| bye_at.is_none()).map(|p| {
            if detaching {
                // A restart: park at this command boundary.
                return not_before.max(Instant::now());
            }
            let settings = p.links.settings();
            let at = if session.is_idle() {
                *idle_started.get_or_insert_with(Instant::now) + settings.timeout
            } else {
                idle_started = None;
                last_input + settings.idle_after
            };
            at.max(not_before)
        });
        tokio::select! {
            // First: a stopping worker parks nothing (checked at the loop top).
            biased;
            () = super::shutdown::stopped(&mut stopping), if bye_at.is_none() => {}
            () = super::shutdown::stopped(&mut kicked), if bye_at.is_none() => {}
            () = super::shutdown::stopped(&mut detach), if !detaching => {}
            () = sleep_until_opt(bye_at), if bye_at.is_some() => {}
            () = sleep_until_opt(park_at), if park_at.is_some() => {
                if let Some(p) = parking.as_ref() {
                    if let Some(process) = p.try_park(&session, w.stream, w.deflate.as_deref()).await {
                        return SessionEnd::Hibernated { process };
                    }
                    not_before = Instant::now()
                        + if detaching { DETACH_RETRY } else { p.links.settings().timeout.max(Duration::from_secs(1)) };
                }
            }
            ready = w.stream.readable() => {
                if ready.is_err() {
                    return SessionEnd::IoError;
                }
                match read_into(w.stream, &mut session, w.deflate.as_deref_mut()) {
                    Ok(0) => return SessionEnd::ClientGone,
                    Ok(n) => {
                        last_input = Instant::now();
                        counters.add_bytes_in(n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::InvalidData && w.deflate.is_some() => {
                        return bad_compressed_input(&mut w, counters, &e).await;
                    }
                    Err(_) => return SessionEnd::IoError,
                }
            }
            () = registration.inbox().notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// How a stopping worker tells its sessions, and how long they may take.
#[derive(Debug, Clone)]
pub struct Stopping {
    /// Turns true when the worker stops.
    pub signal: watch::Receiver<bool>,
    /// How long a command in progress may take to arrive and finish.
    pub grace: Duration,
    /// Turns true when a restart moves the sessions: each parks at its
    /// next command boundary.
    pub detach: watch::Receiver<bool>,
}

/// While detaching, how soon a session that could not be parked (output or
/// expunges pending, a literal half received) tries again.
const DETACH_RETRY: Duration = Duration::from_millis(50);

/// Writes `bye` ([`SHUTDOWN_BYE`] or [`KICK_BYE`]) and closes.
async fn say_bye(w: &mut Writer<'_>, counters: &Counters, bye: &[u8], end: SessionEnd) -> SessionEnd {
    let _ = write(w, bye, counters).await;
    w.stream.shutdown().await;
    // Unread input would make the close an RST, which can destroy the BYE
    // before the client reads it.
    let mut sink = [0u8; READ_CHUNK];
    while matches!(w.stream.try_read(&mut sink), Ok(n) if n > 0) {}
    end
}

/// Sleeps until `at` (never returns for `None`; the branch is disabled then).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Counts tagged responses (command completions) in a chunk of server
/// output made of complete responses, skipping literal data (`{n}\r\n` then
/// n bytes) so message contents are never mistaken for response lines.
pub fn count_tagged_responses(out: &[u8]) -> u64 {
    let mut count = 0;
    let mut pos = 0;
    let mut at_response_start = true;
    while pos < out.len() {
        if at_response_start && out[pos] != b'*' && out[pos] != b'+' {
            count += 1;
        }
        let Some(eol) = out[pos..].windows(2).position(|w| w == b"\r\n") else { break };
        let line = &out[pos..pos + eol];
        pos += eol + 2;
        at_response_start = true;
        if let Some(open) = line.iter().rposition(|&b| b == b'{') {
            let inner = &line[open + 1..];
            if let Some(digits) = inner.strip_suffix(b"}") {
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                if let Some(n) = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<usize>().ok()) {
                    pos = pos.saturating_add(n);
                    at_response_start = false;
                }
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tagged_lines_and_skips_literals() {
        let out = b"* 1 FETCH (BODY[] {21}\r\na1 OK fake\r\nb2 NO x\r\n)\r\na1 OK FETCH done\r\n+ idling\r\n* 3 EXISTS\r\nb OK\r\n";
        assert_eq!(count_tagged_responses(out), 2);
        assert_eq!(count_tagged_responses(b""), 0);
        assert_eq!(count_tagged_responses(b"* BYE bye\r\n"), 0);
        assert_eq!(count_tagged_responses(b"x {99999999999999999999}\r\n"), 1);
    }
}
