//! `dormouse push-relay`: run the webhook / Web Push relay, and manage its
//! registrations (stored in `<state_dir>/registrations.json`; the running
//! relay picks up changes within a second).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use imap::auth::{MailLocation, UserDb};
use push::registration::generate_secret;
use push::registration_store::RegistrationStore;
use push::relay::bus_source::run_bus_source;
use push::relay::jetstream_source::run_jetstream_source;
use push::relay::runner::{run_relay, RunTiming};
use push::relay::{Relay, RelaySettings, RelaySource};
use push::{Registration, Target};
use tokio::sync::watch;

use crate::config::Config;

/// How long `run` keeps delivering after SIGTERM/SIGINT before it stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Arguments of `dormouse push-relay`.
#[derive(Debug, Args)]
pub struct PushRelayArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PushRelayAction,
}

impl PushRelayArgs {
    /// True for `run` (a long-running process that logs at the configured level).
    pub fn is_run(&self) -> bool {
        matches!(self.action, PushRelayAction::Run)
    }
}

/// `push-relay` actions.
#[derive(Debug, Subcommand)]
pub enum PushRelayAction {
    /// Run the relay in the foreground until SIGINT/SIGTERM.
    Run,
    /// Register a webhook for a user's events.
    AddWebhook {
        /// The user whose events are sent (must be in the passwd file).
        #[arg(long)]
        user: String,
        /// `http://` or `https://` URL that receives the POSTs.
        #[arg(long)]
        url: String,
        /// HMAC-SHA256 key for `X-Dormouse-Signature` (16-512 printable
        /// characters); without it a random one is generated and printed once.
        #[arg(long)]
        secret: Option<String>,
        /// Comma-separated RFC 5423 event names (default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Register a Web Push subscription for a user's events.
    AddWebpush(super::push_webpush::AddWebPushArgs),
    /// Print the VAPID public key (the web app's `applicationServerKey`).
    VapidKey,
    /// List registrations (secrets are never shown).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a registration by id.
    Remove {
        /// The id shown by `add-webhook` / `list` (`r-...`).
        id: String,
    },
    /// Print the last dead letters (JSON lines).
    DeadLetters {
        /// How many.
        #[arg(long, default_value_t = 20)]
        tail: usize,
    },
}

/// Runs a `push-relay` action.
///
/// # Errors
/// Bad arguments (URL, secret, event names, unknown user or id), store
/// failures, and for `run` start-up failures.
pub fn run(config: Config, args: PushRelayArgs) -> anyhow::Result<()> {
    let store = RegistrationStore::new(&config.push_state_dir());
    match args.action {
        PushRelayAction::Run => run_relay_process(config),
        PushRelayAction::AddWebhook { user, url, secret, events } => {
            let (secret, generated) = match secret {
                Some(s) => (s, false),
                None => (generate_secret(), true),
            };
            let reg = Registration::new(&user, &events, Target::Webhook { url, secret: secret.clone() })?;
            let users = user_db(&config)?;
            let (id, shown) = (reg.id.clone(), reg.target.display_url());
            store.add(reg.clone(), |name| users.lookup(name).is_some())?;
            println!("added webhook {id} for {user}: {shown} (events: {})", events_text(&reg));
            if generated {
                println!("secret: {secret}");
                println!("(shown only now: the receiver checks X-Dormouse-Signature with it)");
            }
            Ok(())
        }
        PushRelayAction::AddWebpush(a) => super::push_webpush::add_webpush(&config, a),
        PushRelayAction::VapidKey => super::push_webpush::vapid_public_key(&config),
        PushRelayAction::List { user, json } => {
            let regs: Vec<Registration> =
                store.load()?.into_iter().filter(|r| user.as_deref().is_none_or(|u| r.user == u)).collect();
            if json {
                let list: Vec<serde_json::Value> = regs.iter().map(listing).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if regs.is_empty() {
                println!("no registrations");
            } else {
                for r in &regs {
                    let secret = if matches!(r.target, Target::Webhook { .. }) { "  secret: set" } else { "" };
                    println!(
                        "{}  {}  {}  {}  events: {}{secret}",
                        r.id,
                        r.user,
                        r.target.kind_name(),
                        r.target.display_url(),
                        events_text(r)
                    );
                }
            }
            Ok(())
        }
        PushRelayAction::Remove { id } => {
            let removed = store.remove(&id)?;
            println!("removed {} ({} {} for {})", removed.id, removed.target.kind_name(), removed.target.display_url(), removed.user);
            Ok(())
        }
        PushRelayAction::DeadLetters { tail } => {
            let path = config.push_state_dir().join(push::relay::dead_letter::DEAD_LETTER_FILE);
            let lines = push::relay::dead_letter::read_tail(&path, tail)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
    }
}

fn user_db(config: &Config) -> anyhow::Result<UserDb> {
    let location = MailLocation::parse(&config.users.mail_location)?;
    Ok(UserDb::open(config.passwd_file(), location)?)
}

fn events_text(r: &Registration) -> String {
    if r.events.is_empty() {
        "all".into()
    } else {
        r.events.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// A registration for `list --json`: no secret, no subscription keys,
/// no URL credentials.
fn listing(r: &Registration) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": r.id,
        "user": r.user,
        "type": r.target.kind_name(),
        "url": r.target.display_url(),
        "events": r.events,
        "created_ms": r.created_ms,
    });
    if matches!(r.target, Target::Webhook { .. }) {
        v["secret"] = "set".into();
    }
    v
}

/// `push-relay run`.
fn run_relay_process(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async move {
        let source = match config.push.relay.source {
            RelaySource::Auto if config.push.nats.enabled => RelaySource::Jetstream,
            RelaySource::Auto => RelaySource::Bus,
            s => s,
        };
        let state_dir = config.push_state_dir();
        let settings = RelaySettings {
            relay: config.push.relay.clone(),
            max_event_bytes: config.push.max_event_bytes,
            state_dir: state_dir.clone(),
            remember_delivered: source == RelaySource::Jetstream,
            webpush: config.push.webpush.clone(),
        };
        let relay = Relay::new(&settings)?;
        let store = RegistrationStore::new(&state_dir);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            match wait_for_signal().await {
                Ok(name) => tracing::info!(signal = name, "push-relay: stopping (draining for up to {} s)", DRAIN.as_secs()),
                Err(e) => tracing::error!(error = %e, "push-relay: cannot watch signals; stopping"),
            }
            let _ = stop_tx.send(true);
        });
        let bus_cfg = config.bus_resolved();
        tracing::info!(source = ?source, state_dir = %state_dir.display(), "push-relay: starting");
        match source {
            RelaySource::Jetstream => {
                let client = bus::nats::connect(&bus_cfg.nats, |event| async move {
                    tracing::info!(event = %event, "push-relay: NATS connection event");
                })
                .await
                .context("push-relay: NATS (the [bus.nats] connection)")?;
                let source = run_jetstream_source(&relay, client, &config.push.nats, &config.push.relay, stop_rx, DRAIN);
                run_relay(&relay, &store, RunTiming::default(), source).await?;
            }
            RelaySource::Bus | RelaySource::Auto => {
                let subscriber = bus::BusSubscriber::from_config(&bus_cfg).await.context("push-relay: the event bus")?;
                let source = run_bus_source(&relay, subscriber, config.push.headers, stop_rx, DRAIN);
                run_relay(&relay, &store, RunTiming::default(), source).await?;
            }
        }
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
