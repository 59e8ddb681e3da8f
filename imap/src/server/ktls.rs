//! Kernel TLS (Linux `TCP_ULP` "tls"): detection, and the install path that
//! hands a TLS 1.3 session's record protection to the kernel.
//!
//! With kernel TLS a socket carries plaintext for its owner while the kernel
//! seals and opens the records, so a process holding the session (a
//! hibernate process) would hold a plain descriptor and no TLS state.
//! Whether the kernel offers it is found at startup ([`probe`]): the
//! `tcp_available_ulp` list, then a real `setsockopt(TCP_ULP, "tls")` on a
//! loopback connection (which also loads the `tls` module where the kernel
//! may). `[tls] kernel_tls` ([`KernelTlsMode`]) decides what happens:
//! `"off"` never tries, `"auto"` logs what was found and falls back to the
//! user-space record layer ([`tls_record::RecordLayer`]), `"on"` refuses to
//! start without it.
//!
//! [`install`] programs a socket from a [`tls_record::TlsState`]: `TCP_ULP`
//! "tls", then `TLS_TX` and `TLS_RX` with the `tls12_crypto_info_*` structs
//! of `linux/tls.h` (TLS 1.3 uses the same structs). The structs are packed
//! by hand ([`CryptoInfo`]) and checked against the `libc` definitions in
//! the unit tests; the kernel path itself can only run on a kernel with the
//! `tls` ULP, and the session drivers do not call it yet (sessions keep the
//! user-space record layer).

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tls_record::{CipherSuite, TlsState, IV_LEN};

/// Where the kernel lists the TCP upper-layer protocols it can attach.
pub const AVAILABLE_ULP: &str = "/proc/sys/net/ipv4/tcp_available_ulp";

/// `[tls] kernel_tls`: whether to use the kernel's TLS record layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelTlsMode {
    /// Use it where the kernel offers it, else the user-space record layer.
    #[default]
    Auto,
    /// Never use it.
    Off,
    /// Require it: startup (and `config check`) fails without it.
    On,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTlsProbe {
    /// `setsockopt(TCP_ULP, "tls")` worked on a connected socket.
    pub available: bool,
    /// The `tcp_available_ulp` list (empty when unreadable).
    pub ulps: String,
    /// Why it is not available (empty when it is).
    pub reason: String,
}

impl fmt::Display for KernelTlsProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ulps = if self.ulps.is_empty() { "nothing" } else { &self.ulps };
        if self.available {
            write!(f, "kernel TLS available: tcp_available_ulp lists {ulps}")
        } else {
            write!(
                f,
                "kernel TLS not available: tcp_available_ulp lists {ulps}; TLS records are processed in user space ({})",
                self.reason
            )
        }
    }
}

/// Errors of [`check_mode`] and [`install`].
#[derive(Debug, thiserror::Error)]
pub enum KernelTlsError {
    /// `kernel_tls = "on"` on a kernel without the `tls` ULP.
    #[error("tls.kernel_tls = \"on\" but {0}; set it to \"auto\" or \"off\", or load the kernel's tls module")]
    Required(KernelTlsProbe),
    /// The state cannot move to the kernel (bytes still to process in user space).
    #[error("TLS state not ready for kernel TLS: {0}")]
    NotReady(&'static str),
    /// Deriving the traffic keys failed.
    #[error("TLS key derivation: {0}")]
    Keys(#[from] tls_record::Error),
    /// A `setsockopt` failed.
    #[error("{step}: {source}")]
    Sockopt {
        /// Which call.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Process-wide kernel TLS counts for the metrics endpoint.
#[derive(Debug, Default)]
pub struct KernelTlsCounts {
    /// 1 if the startup probe found kernel TLS, else 0.
    pub available: AtomicU64,
    /// Probes that found no kernel TLS (the user-space fallback was chosen).
    pub fallbacks: AtomicU64,
    /// Sockets whose records the kernel took over.
    pub installed: AtomicU64,
}

/// The counts of this process.
pub static COUNTS: KernelTlsCounts =
    KernelTlsCounts { available: AtomicU64::new(0), fallbacks: AtomicU64::new(0), installed: AtomicU64::new(0) };

/// Finds out whether the kernel offers TLS: reads [`AVAILABLE_ULP`], then
/// tries `TCP_ULP` "tls" on a loopback connection (ENOENT: no such ULP,
/// EOPNOTSUPP: not for this socket).
pub fn probe() -> KernelTlsProbe {
    let ulps = std::fs::read_to_string(AVAILABLE_ULP).map(|s| s.trim().to_string()).unwrap_or_default();
    match try_attach() {
        Ok(()) => KernelTlsProbe { available: true, ulps, reason: String::new() },
        Err(e) => KernelTlsProbe { available: false, ulps, reason: e.to_string() },
    }
}

/// Probes per `mode`, logs the outcome once at INFO and records it in
/// [`COUNTS`]. Returns whether sessions may use kernel TLS.
///
/// # Errors
/// [`KernelTlsError::Required`] for `"on"` without kernel TLS.
pub fn check_mode(mode: KernelTlsMode) -> Result<bool, KernelTlsError> {
    if mode == KernelTlsMode::Off {
        tracing::info!("kernel TLS off (tls.kernel_tls = \"off\"); TLS records are processed in user space");
        return Ok(false);
    }
    let found = probe();
    COUNTS.available.store(u64::from(found.available), Ordering::Relaxed);
    if !found.available {
        if mode == KernelTlsMode::On {
            return Err(KernelTlsError::Required(found));
        }
        COUNTS.fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::info!("{found}");
        return Ok(false);
    }
    tracing::info!("{found}; the session drivers keep the user-space record layer for now");
    Ok(true)
}

#[cfg(target_os = "linux")]
fn try_attach() -> io::Result<()> {
    use std::os::fd::AsFd;
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    set_ulp(client.as_fd())
}

#[cfg(not(target_os = "linux"))]
fn try_attach() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "kernel TLS is Linux only"))
}

/// A `tls12_crypto_info_*` struct of `linux/tls.h`, packed as the kernel
/// reads it: `u16 version, u16 cipher_type` (native endian), then `iv`,
/// `key`, `salt`, `rec_seq` (bytes; no padding: every field after the
/// header is a byte array).
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoInfo(Vec<u8>);

impl fmt::Debug for CryptoInfo {
    // Key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoInfo").field("len", &self.0.len()).finish_non_exhaustive()
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

/// `TLS_1_3_VERSION` of `linux/tls.h`.
const TLS_1_3_VERSION: u16 = 0x0304;
/// `TLS_CIPHER_AES_GCM_128`, `_AES_GCM_256`, `_CHACHA20_POLY1305`.
const CIPHER_AES_GCM_128: u16 = 51;
const CIPHER_AES_GCM_256: u16 = 52;
const CIPHER_CHACHA20_POLY1305: u16 = 54;

impl CryptoInfo {
    /// The struct for one direction: the key and IV derived from `secret`,
    /// and `seq` as the record sequence number. For AES-GCM the kernel
    /// splits the 12-byte TLS 1.3 IV into a 4-byte salt and an 8-byte
    /// "iv"; ChaCha20-Poly1305 takes the 12 bytes as iv and no salt.
    ///
    /// # Errors
    /// A secret of the wrong length for the suite.
    pub fn new(suite: CipherSuite, secret: &[u8], seq: u64) -> Result<Self, tls_record::Error> {
        let (key, iv) = tls_record::traffic_key_iv(suite, secret)?;
        let cipher = match suite {
            CipherSuite::Aes128GcmSha256 => CIPHER_AES_GCM_128,
            CipherSuite::Aes256GcmSha384 => CIPHER_AES_GCM_256,
            CipherSuite::Chacha20Poly1305Sha256 => CIPHER_CHACHA20_POLY1305,
        };
        let mut out = Vec::with_capacity(4 + IV_LEN + key.len() + 8);
        out.extend_from_slice(&TLS_1_3_VERSION.to_ne_bytes());
        out.extend_from_slice(&cipher.to_ne_bytes());
        match suite {
            CipherSuite::Chacha20Poly1305Sha256 => {
                out.extend_from_slice(&iv);
                out.extend_from_slice(&key);
            }
            CipherSuite::Aes128GcmSha256 | CipherSuite::Aes256GcmSha384 => {
                out.extend_from_slice(&iv[4..]);
                out.extend_from_slice(&key);
                out.extend_from_slice(&iv[..4]);
            }
        }
        out.extend_from_slice(&seq.to_be_bytes());
        Ok(CryptoInfo(out))
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Hands `fd`'s record layer to the kernel: `TCP_ULP` "tls", then
/// `TLS_TX` from `state.write` and `TLS_RX` from `state.read`. The state
/// must have nothing left for user space (no buffered ciphertext, no
/// partial handshake message, nothing to transmit). After success the
/// socket reads and writes plaintext and `state` must be dropped unused.
///
/// # Errors
/// [`KernelTlsError`]; after a failure past `TCP_ULP` the socket is unusable
/// for the user-space record layer too (the kernel may hold half a state).
pub fn install(fd: BorrowedFd<'_>, state: &TlsState) -> Result<(), KernelTlsError> {
    if !state.incoming.is_empty() || !state.handshake_partial.is_empty() || !state.transmit.is_empty() {
        return Err(KernelTlsError::NotReady("records still buffered in user space"));
    }
    let tx = CryptoInfo::new(state.suite, &state.write.secret, state.write.seq)?;
    let rx = CryptoInfo::new(state.suite, &state.read.secret, state.read.seq)?;
    set_ulp(fd).map_err(|source| KernelTlsError::Sockopt { step: "setsockopt(TCP_ULP, \"tls\")", source })?;
    set_crypto(fd, TLS_TX_OPT, &tx).map_err(|source| KernelTlsError::Sockopt { step: "setsockopt(TLS_TX)", source })?;
    set_crypto(fd, TLS_RX_OPT, &rx).map_err(|source| KernelTlsError::Sockopt { step: "setsockopt(TLS_RX)", source })?;
    COUNTS.installed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(target_os = "linux")]
const TLS_TX_OPT: i32 = libc::TLS_TX;
#[cfg(target_os = "linux")]
const TLS_RX_OPT: i32 = libc::TLS_RX;
#[cfg(not(target_os = "linux"))]
const TLS_TX_OPT: i32 = 1;
#[cfg(not(target_os = "linux"))]
const TLS_RX_OPT: i32 = 2;

#[cfg(target_os = "linux")]
fn set_ulp(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_ULP, b"tls")
}

#[cfg(target_os = "linux")]
fn set_crypto(fd: BorrowedFd<'_>, direction: i32, info: &CryptoInfo) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TLS, direction, info.as_bytes())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn setsockopt(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::socklen_t::try_from(value.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a live descriptor for the duration of the borrow, and
    // the kernel reads exactly `len` bytes from `value`, which outlives the call.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_ulp(_fd: BorrowedFd<'_>) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "kernel TLS is Linux only"))
}

#[cfg(not(target_os = "linux"))]
fn set_crypto(_fd: BorrowedFd<'_>, _direction: i32, _info: &CryptoInfo) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "kernel TLS is Linux only"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// RFC 8448 §3 server application traffic secret, key and IV.
    const SECRET: &str = "a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643";
    const KEY: &str = "9f02283b6c9c07efc26bb9f2ac92e356";
    const IV: &str = "cf782b88dd83549aadf1e984";

    #[test]
    fn aes_128_gcm_layout_matches_the_kernel_struct() {
        type S = libc::tls12_crypto_info_aes_gcm_128;
        let info = CryptoInfo::new(CipherSuite::Aes128GcmSha256, &hex(SECRET), 0x0102_0304_0506_0708).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), size_of::<S>());
        let header = offset_of!(S, info);
        assert_eq!(&b[header..header + 2], &libc::TLS_1_3_VERSION.to_ne_bytes());
        assert_eq!(&b[header + 2..header + 4], &libc::TLS_CIPHER_AES_GCM_128.to_ne_bytes());
        let iv = hex(IV);
        assert_eq!(&b[offset_of!(S, iv)..][..8], &iv[4..], "iv: the last 8 bytes of the TLS IV");
        assert_eq!(&b[offset_of!(S, key)..][..16], hex(KEY).as_slice());
        assert_eq!(&b[offset_of!(S, salt)..][..4], &iv[..4], "salt: the first 4 bytes");
        assert_eq!(&b[offset_of!(S, rec_seq)..][..8], &[1, 2, 3, 4, 5, 6, 7, 8], "rec_seq big-endian");
    }

    #[test]
    fn aes_256_gcm_layout_matches_the_kernel_struct() {
        type S = libc::tls12_crypto_info_aes_gcm_256;
        let secret = vec![9u8; CipherSuite::Aes256GcmSha384.secret_len()];
        let (key, iv) = tls_record::traffic_key_iv(CipherSuite::Aes256GcmSha384, &secret).unwrap();
        let info = CryptoInfo::new(CipherSuite::Aes256GcmSha384, &secret, 7).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), size_of::<S>());
        assert_eq!(&b[2..4], &libc::TLS_CIPHER_AES_GCM_256.to_ne_bytes());
        assert_eq!(&b[offset_of!(S, iv)..][..8], &iv[4..]);
        assert_eq!(&b[offset_of!(S, key)..][..32], key.as_slice());
        assert_eq!(&b[offset_of!(S, salt)..][..4], &iv[..4]);
        assert_eq!(&b[offset_of!(S, rec_seq)..][..8], &7u64.to_be_bytes());
    }

    #[test]
    fn chacha20_poly1305_layout_matches_the_kernel_struct() {
        type S = libc::tls12_crypto_info_chacha20_poly1305;
        let secret = vec![3u8; CipherSuite::Chacha20Poly1305Sha256.secret_len()];
        let (key, iv) = tls_record::traffic_key_iv(CipherSuite::Chacha20Poly1305Sha256, &secret).unwrap();
        let info = CryptoInfo::new(CipherSuite::Chacha20Poly1305Sha256, &secret, u64::MAX).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), size_of::<S>());
        assert_eq!(&b[2..4], &libc::TLS_CIPHER_CHACHA20_POLY1305.to_ne_bytes());
        assert_eq!(&b[offset_of!(S, iv)..][..12], &iv, "the whole 12-byte IV, no salt");
        assert_eq!(&b[offset_of!(S, key)..][..32], key.as_slice());
        assert_eq!(&b[offset_of!(S, rec_seq)..][..8], &[0xff; 8]);
    }

    #[test]
    fn a_secret_of_the_wrong_length_is_refused() {
        assert!(CryptoInfo::new(CipherSuite::Aes256GcmSha384, &[0u8; 32], 0).is_err());
    }

    #[test]
    fn the_probe_agrees_with_the_ulp_list() {
        let found = probe();
        let listed = std::fs::read_to_string(AVAILABLE_ULP).unwrap_or_default();
        if !listed.split_whitespace().any(|u| u == "tls") && !found.available {
            assert!(!found.reason.is_empty(), "a reason is given: {found:?}");
            assert!(found.to_string().contains("TLS records are processed in user space"), "{found}");
        }
        assert_eq!(found.ulps, listed.trim());
    }
}
