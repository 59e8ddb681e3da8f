//! `[metrics] listen`: the Prometheus/OpenMetrics endpoint of `serve`.
//!
//! One scrape reports the whole server: the master's own counts (pre-login
//! connections, logins, hand-overs, TLS relays, worker restarts), every
//! hibernate process's counters (asked over its control socket, as `dormouse
//! stats` does), the LMTP service's outcomes, and the memory (PSS) of every
//! dormouse process. Values are read at scrape time into a fresh registry,
//! so nothing here keeps state between scrapes except the two supervision
//! counters below.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hibernate::core::{HandBackReason, LatencyBuckets, LATENCY_BOUNDS_MS};
use hibernate::driver::control::{query, ControlReply, ControlRequest};
use imap::lmtp::LmtpServer;
use imap::server::metrics::MasterMetrics;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Hibernate processes that died and were restarted (bumped by the supervisor).
pub static HIBERNATE_RESTARTS: AtomicU64 = AtomicU64::new(0);
/// Sessions dropped with a hibernate process that died.
pub static HIBERNATE_SESSIONS_LOST: AtomicU64 = AtomicU64::new(0);

/// Where a scrape reads from.
pub struct MetricsSources {
    /// The IMAP master, if IMAP is enabled.
    pub master: Option<MasterMetrics>,
    /// The LMTP service.
    pub lmtp: Arc<LmtpServer>,
    /// The master's bus publisher (LMTP deliveries' events), if the bus opened.
    pub bus: Option<bus::BusPublisher>,
    /// The run directory holding the hibernate processes' control sockets.
    pub run_dir: PathBuf,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

/// Registers counter `name` (exposed as `name_total`) with one value per label set.
fn counters(registry: &mut Registry, name: &str, help: &str, values: &[(&[(&str, &str)], u64)]) {
    let family = Family::<Labels, Counter>::default();
    for (pairs, value) in values {
        family.get_or_create(&labels(pairs)).inc_by(*value);
    }
    registry.register(name, help, family);
}

/// Registers gauge `name` with one value per label set.
fn gauges(registry: &mut Registry, name: &str, help: &str, values: &[(&[(&str, &str)], u64)]) {
    let family = Family::<Labels, Gauge>::default();
    for (pairs, value) in values {
        family.get_or_create(&labels(pairs)).set(i64::try_from(*value).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

/// The hibernate processes' counters, summed.
#[derive(Default)]
struct HibernateTotals {
    processes: u64,
    counters: hibernate::core::Counters,
}

fn hibernate_totals(run_dir: &std::path::Path) -> HibernateTotals {
    let mut totals = HibernateTotals::default();
    for path in super::hibernate::sockets(run_dir) {
        let Ok(ControlReply::Stats { counters: c, .. }) = query(&path, ControlRequest::Stats) else {
            continue;
        };
        totals.processes += 1;
        let t = &mut totals.counters;
        t.held += c.held;
        t.hibernations += c.hibernations;
        for (sum, n) in t.hand_backs.iter_mut().zip(c.hand_backs) {
            *sum += n;
        }
        t.ended += c.ended;
        t.events_in += c.events_in;
        t.notifications += c.notifications;
        t.resyncs += c.resyncs;
        t.answered += c.answered;
        t.status_from_cache += c.status_from_cache;
        t.keepalives += c.keepalives;
        t.timeouts += c.timeouts;
        t.refused_full += c.refused_full;
        t.notify_latency_ms.merge(&c.notify_latency_ms);
    }
    totals
}

/// A histogram whose buckets were counted elsewhere (the hibernate
/// processes' [`LatencyBuckets`], in ms), exposed in seconds.
#[derive(Debug)]
struct CountedHistogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl CountedHistogram {
    fn from_ms(b: &LatencyBuckets) -> Self {
        let bounds = LATENCY_BOUNDS_MS.iter().map(|&ms| ms as f64 / 1000.0).chain([f64::MAX]);
        CountedHistogram { buckets: bounds.zip(b.counts).collect(), sum: b.sum_ms as f64 / 1000.0, count: b.count() }
    }
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// PSS in bytes and count of this process and its children, by role.
#[derive(Default)]
struct ProcessMemory {
    master: (u64, u64),
    worker: (u64, u64),
    hibernate: (u64, u64),
    other: (u64, u64),
}

fn pss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn process_memory() -> ProcessMemory {
    let me = std::process::id();
    let mut memory = ProcessMemory { master: (pss_bytes(me), 1), ..ProcessMemory::default() };
    // A child is listed under the thread that forked it.
    let mut children = String::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        children += &std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.push(' ');
    }
    for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let has = |word: &[u8]| cmdline.split(|&b| b == 0).any(|a| a == word);
        let slot = if has(b"worker") {
            &mut memory.worker
        } else if has(b"hibernate") {
            &mut memory.hibernate
        } else {
            &mut memory.other
        };
        slot.0 += pss_bytes(pid);
        slot.1 += 1;
    }
    memory
}

/// One scrape: OpenMetrics text.
pub fn render(sources: &MetricsSources) -> String {
    let mut r = Registry::default();
    let m = sources.master.as_ref().map(MasterMetrics::snapshot).unwrap_or_default();
    let h = hibernate_totals(&sources.run_dir);
    let hc = &h.counters;
    gauges(
        &mut r,
        "dormouse_sessions",
        "IMAP sessions now, by state (pre-login in the master, live in a worker, hibernated).",
        &[(&[("state", "pre_login")], m.pre_login), (&[("state", "in_worker")], m.in_workers), (&[("state", "hibernated")], hc.held)],
    );
    gauges(&mut r, "dormouse_tls_sessions_relayed", "Logged-in TLS sessions whose records the master relays now.", &[(&[], m.tls_proxies_open)]);
    counters(&mut r, "dormouse_connections", "IMAP connections accepted.", &[(&[], m.connections)]);
    counters(
        &mut r,
        "dormouse_logins",
        "IMAP logins, by result.",
        &[(&[("result", "ok")], m.logins_ok), (&[("result", "failed")], m.logins_failed)],
    );
    counters(
        &mut r,
        "dormouse_handovers",
        "Logged-in sessions handed from the master to a worker, by transport.",
        &[
            (&[("transport", "plain")], m.handed_over_plain),
            (&[("transport", "tls")], m.handed_over_tls),
            (&[("transport", "tls-proxied")], m.handed_over_tls_proxied),
        ],
    );
    let k = &imap::server::ktls::COUNTS;
    gauges(&mut r, "dormouse_kernel_tls_available", "1 if the startup probe found kernel TLS (TCP_ULP \"tls\"), else 0.", &[(&[], k.available.load(Ordering::Relaxed))]);
    counters(
        &mut r,
        "dormouse_kernel_tls",
        "Kernel TLS outcomes: user-space fallbacks chosen at startup, sockets handed to the kernel.",
        &[(&[("outcome", "fallback")], k.fallbacks.load(Ordering::Relaxed)), (&[("outcome", "installed")], k.installed.load(Ordering::Relaxed))],
    );
    counters(&mut r, "dormouse_handover_failures", "Hand-overs to a worker that failed.", &[(&[], m.handover_failures)]);
    counters(&mut r, "dormouse_hibernations", "Sessions parked in a hibernate process.", &[(&[], hc.hibernations)]);
    let reasons: Vec<[(&str, &str); 1]> = HandBackReason::ALL.iter().map(|r| [("reason", r.as_str())]).collect();
    let hand_backs: Vec<(&[(&str, &str)], u64)> =
        HandBackReason::ALL.iter().zip(&reasons).map(|(reason, l)| (l.as_slice(), hc.hand_backs_for(*reason))).collect();
    counters(&mut r, "dormouse_hand_backs", "Sessions handed back from a hibernate process to a worker, by reason.", &hand_backs);
    counters(&mut r, "dormouse_hibernated_sessions_ended", "Sessions that ended while hibernated (LOGOUT, client gone).", &[(&[], hc.ended)]);
    counters(&mut r, "dormouse_hibernate_events", "Change events applied by hibernate processes.", &[(&[], hc.events_in)]);
    counters(&mut r, "dormouse_hibernate_notifications", "EXISTS/EXPUNGE/FETCH updates written to hibernated clients.", &[(&[], hc.notifications)]);
    counters(&mut r, "dormouse_hibernate_resyncs", "Mailbox resyncs from storage by hibernate processes.", &[(&[], hc.resyncs)]);
    counters(&mut r, "dormouse_hibernate_answered", "Commands hibernate processes answered without a worker.", &[(&[], hc.answered)]);
    counters(&mut r, "dormouse_hibernate_timeouts", "Hibernated sessions ended by the IDLE timeout or autologout.", &[(&[], hc.timeouts)]);
    counters(&mut r, "dormouse_hibernate_refused_full", "Sessions a full hibernate process sent straight back.", &[(&[], hc.refused_full)]);
    r.register(
        "dormouse_hibernate_notify_latency_seconds",
        "Seconds from a change until hibernate processes wrote its EXISTS/EXPUNGE/FETCH to the idling clients.",
        CountedHistogram::from_ms(&hc.notify_latency_ms),
    );
    gauges(&mut r, "dormouse_hibernate_processes_answering", "Hibernate processes that answered this scrape.", &[(&[], h.processes)]);
    counters(
        &mut r,
        "dormouse_process_restarts",
        "Child processes that died and were restarted, by kind.",
        &[(&[("process", "worker")], m.worker_restarts), (&[("process", "hibernate")], HIBERNATE_RESTARTS.load(Ordering::Relaxed))],
    );
    counters(
        &mut r,
        "dormouse_sessions_lost",
        "Sessions dropped because the process holding them died, by kind.",
        &[
            (&[("process", "worker")], m.worker_sessions_lost),
            (&[("process", "hibernate")], HIBERNATE_SESSIONS_LOST.load(Ordering::Relaxed)),
        ],
    );
    counters(
        &mut r,
        "dormouse_restart_sessions",
        "Sessions handed to a new generation by restarts (SIGUSR2, `dormouse restart`) since the first start, by outcome.",
        &[
            (&[("outcome", "moved")], super::serve_restart::RESTART_MOVED.load(Ordering::Relaxed)),
            (&[("outcome", "lost")], super::serve_restart::RESTART_LOST.load(Ordering::Relaxed)),
        ],
    );
    counters(
        &mut r,
        "dormouse_master_client_bytes",
        "Bytes between clients and the master (pre-login and TLS relay), by direction.",
        &[(&[("direction", "in")], m.bytes_in), (&[("direction", "out")], m.bytes_out)],
    );
    let l = sources.lmtp.counts();
    counters(&mut r, "dormouse_lmtp_connections", "LMTP connections accepted.", &[(&[], l.connections)]);
    counters(
        &mut r,
        "dormouse_lmtp_recipients",
        "LMTP recipients by outcome (stored 250, unknown_user 550 at RCPT, too_large 552, rejected 5xx, temp_failed 451, no_space 452).",
        &[
            (&[("outcome", "stored")], l.stored),
            (&[("outcome", "unknown_user")], l.unknown_recipients),
            (&[("outcome", "too_large")], l.too_large),
            (&[("outcome", "rejected")], l.rejected),
            (&[("outcome", "temp_failed")], l.temp_failed),
            (&[("outcome", "no_space")], l.no_space),
        ],
    );
    r.register(
        "dormouse_lmtp_delivery_seconds",
        "Seconds from the end of an LMTP DATA until every recipient's copy is stored.",
        sources.lmtp.delivery_seconds(),
    );
    if let Some(publisher) = &sources.bus {
        let transport = match publisher {
            bus::BusPublisher::Unix(_) => "unix",
            bus::BusPublisher::Nats(_) => "nats",
        };
        let b = publisher.counters();
        let t = [("process", "master"), ("transport", transport)];
        counters(&mut r, "dormouse_bus_events_published", "Change events the master handed to the bus (per receiver on the UNIX bus).", &[(&t, b.events_out)]);
        counters(
            &mut r,
            "dormouse_bus_events_dropped",
            "Change events the master's bus publisher could not hand on (receivers resync), by reason.",
            &[
                (&[("process", "master"), ("transport", transport), ("reason", "send")], b.dropped_send),
                (&[("process", "master"), ("transport", transport), ("reason", "queue_full")], b.dropped_queue_full),
            ],
        );
        counters(&mut r, "dormouse_bus_gaps", "Gaps the master's bus publisher caused (receivers resync).", &[(&t, b.gaps)]);
    }
    let mem = process_memory();
    let roles = [("master", mem.master), ("worker", mem.worker), ("hibernate", mem.hibernate), ("other", mem.other)];
    let role_labels: Vec<[(&str, &str); 1]> = roles.iter().map(|(role, _)| [("process", *role)]).collect();
    let pss: Vec<(&[(&str, &str)], u64)> = role_labels.iter().zip(&roles).map(|(l, (_, (bytes, _)))| (l.as_slice(), *bytes)).collect();
    let count: Vec<(&[(&str, &str)], u64)> = role_labels.iter().zip(&roles).map(|(l, (_, (_, n)))| (l.as_slice(), *n)).collect();
    gauges(&mut r, "dormouse_memory_pss_bytes", "Proportional set size of the dormouse processes, by kind (summed).", &pss);
    gauges(&mut r, "dormouse_processes", "Running dormouse processes, by kind.", &count);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &r);
    text
}

async fn scrape(axum::extract::State(sources): axum::extract::State<Arc<MetricsSources>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Control-socket queries and /proc reads block.
    match tokio::task::spawn_blocking(move || render(&sources)).await {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics scrape failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, sources: Arc<MetricsSources>, mut shutdown: watch::Receiver<bool>) {
    let app = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(sources);
    let stopped = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!(error = %e, "metrics endpoint failed");
    }
}
