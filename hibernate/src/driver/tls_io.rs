//! TLS for held sessions: the session's [`TlsState`] sits in its handle
//! (a few hundred bytes); a [`RecordLayer`] is built from it only for the
//! moment bytes go in or out, so a quiet TLS session costs no more key
//! schedule memory than its secrets.

use tls_record::{Event, RecordLayer, TlsState};

/// What a chunk of client ciphertext amounted to.
#[derive(Debug, Default)]
pub(super) struct Opened {
    /// Decrypted application data, in order.
    pub plain: Vec<u8>,
    /// The client sent close_notify.
    pub peer_closed: bool,
    /// A fatal record error; its alert is queued in the state's transmit.
    pub failed: Option<tls_record::Error>,
}

/// Runs `f` on a layer built from `tls`, then stores the state back.
fn with_layer<T>(
    tls: &mut Option<TlsState>,
    f: impl FnOnce(&mut RecordLayer) -> T,
) -> Option<T> {
    let state = tls.take()?;
    match RecordLayer::from_state(state) {
        Ok(mut layer) => {
            let out = f(&mut layer);
            *tls = Some(layer.into_state());
            Some(out)
        }
        // Checked when the record was decoded; a state that cannot run
        // leaves the session without TLS, and the caller closes it.
        Err(e) => {
            tracing::error!(error = %e, "TLS state cannot run; closing");
            None
        }
    }
}

/// Decrypts `raw`; a KeyUpdate answer or an alert lands in the state's
/// transmit (see [`seal`]). `None`: the state could not run.
pub(super) fn open(tls: &mut Option<TlsState>, raw: &[u8]) -> Option<Opened> {
    with_layer(tls, |layer| {
        layer.enqueue_input(raw);
        let mut opened = Opened::default();
        loop {
            match layer.next() {
                Ok(Some(Event::ApplicationData(data))) => opened.plain.extend_from_slice(&data),
                Ok(Some(Event::CloseNotify)) => {
                    opened.peer_closed = true;
                    break;
                }
                Ok(Some(Event::KeyUpdate { .. })) => {}
                Ok(None) => break,
                Err(e) => {
                    opened.failed = Some(e);
                    break;
                }
            }
        }
        opened
    })
}

/// True if sealed bytes are waiting to be written (a KeyUpdate answer, an
/// alert, or records the socket did not take).
pub(super) fn has_transmit(tls: &Option<TlsState>) -> bool {
    tls.as_ref().is_some_and(|s| !s.transmit.is_empty())
}

/// Everything to write: queued transmit bytes, then `plain` sealed.
/// Empty if the session's TLS is over (after an alert or close_notify
/// only the queued bytes go out).
pub(super) fn seal(tls: &mut Option<TlsState>, plain: &[u8]) -> Vec<u8> {
    with_layer(tls, |layer| {
        if plain.is_empty() {
            return layer.take_transmit();
        }
        match layer.seal(plain) {
            Ok(out) => out,
            Err(_) => layer.take_transmit(),
        }
    })
    .unwrap_or_default()
}

/// Puts ciphertext the socket did not take back in front of the queue.
pub(super) fn keep_unsent(tls: &mut Option<TlsState>, rest: &[u8]) {
    if let Some(state) = tls.as_mut() {
        let mut joined = rest.to_vec();
        joined.extend_from_slice(&state.transmit);
        state.transmit = joined;
    }
}

/// The last words to a TLS client: queued bytes, `bye` sealed, close_notify.
pub(super) fn farewell(tls: &mut Option<TlsState>, bye: &[u8]) -> Vec<u8> {
    with_layer(tls, |layer| {
        let mut out = if bye.is_empty() {
            layer.take_transmit()
        } else {
            layer.seal(bye).unwrap_or_else(|_| layer.take_transmit())
        };
        if let Ok(close) = layer.close_notify() {
            out.extend_from_slice(&close);
        }
        out
    })
    .unwrap_or_default()
}
