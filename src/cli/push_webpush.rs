//! `dormouse push-relay add-webpush` and `dormouse push-relay vapid-key`:
//! register a browser's Web Push subscription, print the VAPID public key.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use imap::auth::{MailLocation, UserDb};
use push::registration_store::RegistrationStore;
use push::web_push::{vapid_key_path, VapidSigner};
use push::{Registration, Target};
use serde::Deserialize;

use crate::config::Config;

/// Arguments of `push-relay add-webpush`.
#[derive(Debug, Args)]
pub struct AddWebPushArgs {
    /// The user whose events are pushed.
    #[arg(long)]
    pub user: String,
    /// The subscription's push service URL (`PushSubscription.endpoint`).
    #[arg(long, required_unless_present = "subscription", conflicts_with = "subscription")]
    pub endpoint: Option<String>,
    /// The browser's P-256 public key, base64url (`keys.p256dh`).
    #[arg(long, required_unless_present = "subscription", conflicts_with = "subscription")]
    pub p256dh: Option<String>,
    /// The 16-byte authentication secret, base64url (`keys.auth`).
    #[arg(long, required_unless_present = "subscription", conflicts_with = "subscription")]
    pub auth: Option<String>,
    /// A file with the subscription as `JSON.stringify(subscription)` gives
    /// it (`{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}`); `-`
    /// reads standard input. Instead of --endpoint/--p256dh/--auth.
    #[arg(long, value_name = "FILE")]
    pub subscription: Option<PathBuf>,
    /// RFC 5423 event types to push, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
}

/// A browser's `PushSubscription.toJSON()`.
#[derive(Deserialize)]
struct SubscriptionJson {
    endpoint: String,
    keys: SubscriptionKeysJson,
}

/// The `keys` member of a `PushSubscription.toJSON()`.
#[derive(Deserialize)]
struct SubscriptionKeysJson {
    p256dh: String,
    auth: String,
}

/// The push state directory: `push.relay.state_dir`, or `<data_dir>/push`.
/// Checks a Web Push subscription and stores it as a registration of
/// `args.user`; the running relay picks it up without a restart. The same
/// endpoint registered again for the same user replaces the old
/// registration (or is a no-op if nothing changed).
///
/// # Errors
/// An invalid subscription (URL or keys), an unknown user or event type,
/// an unreadable subscription file, or a registration store failure.
pub fn add_webpush(config: &Config, args: AddWebPushArgs) -> anyhow::Result<()> {
    let (endpoint, p256dh, auth) = match &args.subscription {
        Some(path) => read_subscription(path)?,
        None => match (args.endpoint, args.p256dh, args.auth) {
            (Some(e), Some(p), Some(a)) => (e, p, a),
            _ => anyhow::bail!("give --endpoint, --p256dh and --auth, or --subscription FILE"),
        },
    };
    let (endpoint, p256dh, auth) = (endpoint.trim().to_owned(), p256dh.trim().to_owned(), auth.trim().to_owned());
    // Registration::new checks the subscription (web_push::validate_subscription).
    let registration = Registration::new(&args.user, &args.events, Target::Webpush { endpoint, p256dh, auth })?;

    let location = MailLocation::parse(&config.users.mail_location)?;
    let users = UserDb::open(config.passwd_file(), location)?;
    let state_dir = config.push_state_dir();
    let store = RegistrationStore::new(&state_dir);
    store.ensure_dir()?;
    let (id, origin) = (registration.id.clone(), registration.target.display_url());
    // A page that subscribes again gets the same endpoint: one registration
    // per user and endpoint, so the device is not notified twice.
    let same_endpoint = |r: &Registration| r.user == registration.user && same_push_endpoint(&r.target, &registration.target);
    let existing: Vec<Registration> = store.load()?.into_iter().filter(same_endpoint).collect();
    if let [old] = existing.as_slice() {
        if old.target == registration.target && old.events == registration.events {
            println!("Web Push subscription already registered as {} for {} ({origin})", old.id, args.user);
            return Ok(());
        }
    }
    store.add(registration, |name| users.lookup(name).is_some())?;
    for old in &existing {
        store.remove(&old.id)?;
    }
    match existing.as_slice() {
        [] => println!("added Web Push registration {id} for {} ({origin})", args.user),
        old => {
            let old: Vec<&str> = old.iter().map(|r| r.id.as_str()).collect();
            println!("added Web Push registration {id} for {} ({origin}), replacing {}", args.user, old.join(", "));
        }
    }

    let key_path = vapid_key_path(&config.push.webpush, &state_dir);
    if !key_path.exists() {
        eprintln!(
            "dormouse: warning: there is no VAPID key yet ({}), so this subscription cannot have been made with it; \
             run `dormouse push-relay vapid-key` and subscribe with the key it prints, or the push service will refuse the messages",
            key_path.display()
        );
    }
    Ok(())
}

/// Prints the VAPID public key (base64url), what a web app passes as
/// `applicationServerKey` to `pushManager.subscribe`; makes the key pair
/// first if there is none.
///
/// # Errors
/// An unreadable or invalid key file, or one that cannot be created.
pub fn vapid_public_key(config: &Config) -> anyhow::Result<()> {
    let state_dir = config.push_state_dir();
    let path = vapid_key_path(&config.push.webpush, &state_dir);
    let signer = VapidSigner::load_or_create(&path, &config.push.webpush.subject)?;
    println!("{}", signer.public_key());
    Ok(())
}

/// True if both are Web Push targets with the same endpoint URL.
fn same_push_endpoint(a: &Target, b: &Target) -> bool {
    matches!((a, b), (Target::Webpush { endpoint: x, .. }, Target::Webpush { endpoint: y, .. }) if x == y)
}

/// Reads `(endpoint, p256dh, auth)` from a subscription JSON file (`-` = stdin).
fn read_subscription(path: &Path) -> anyhow::Result<(String, String, String)> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read the subscription from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read subscription file {}", path.display()))?
    };
    let source = if path == Path::new("-") { "standard input".to_owned() } else { path.display().to_string() };
    let sub: SubscriptionJson = serde_json::from_str(&text).with_context(|| {
        format!("{source} is not a PushSubscription JSON ({{\"endpoint\": \"https://...\", \"keys\": {{\"p256dh\": \"...\", \"auth\": \"...\"}}}})")
    })?;
    Ok((sub.endpoint, sub.keys.p256dh, sub.keys.auth))
}

#[cfg(test)]
mod tests {
    use imap::auth::PasswordScheme;
    use push::registration_store::RegistrationStore;

    use super::*;

    fn config(dir: &Path) -> Config {
        let config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
        crate::cli::first_run::add_local_user(&config, "alice", "pw", PasswordScheme::Plain).unwrap();
        config
    }

    fn args(endpoint: &str, p256dh: &str, auth: &str, events: &[&str]) -> AddWebPushArgs {
        AddWebPushArgs {
            user: "alice".into(),
            endpoint: Some(endpoint.into()),
            p256dh: Some(p256dh.into()),
            auth: Some(auth.into()),
            subscription: None,
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    /// Valid subscription keys: the user agent's key and auth secret of
    /// RFC 8291 Appendix A.
    fn browser_keys() -> (String, String) {
        ("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4".into(), "BTBZMqHH6r4Tts7J_aSIgg".into())
    }

    /// Other valid keys: the application server's public key of RFC 8291
    /// Appendix A, with another secret.
    fn other_browser_keys() -> (String, String) {
        ("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8".into(), "AAECAwQFBgcICQoLDA0ODw".into())
    }

    #[test]
    fn add_checks_stores_and_replaces_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = RegistrationStore::new(&dir.path().join("push"));
        let (p256dh, auth) = browser_keys();
        let url = "https://push.example.net/sub/1";

        let err = add_webpush(&config, args("http://push.example.net/x", &p256dh, &auth, &[])).unwrap_err();
        assert!(format!("{err:#}").contains("must use https://"), "{err:#}");
        let err = add_webpush(&config, args(url, &p256dh[..20], &auth, &[])).unwrap_err();
        assert!(format!("{err:#}").contains("p256dh"), "{err:#}");
        let mut unknown = args(url, &p256dh, &auth, &[]);
        unknown.user = "bob".into();
        assert!(format!("{:#}", add_webpush(&config, unknown).unwrap_err()).contains("bob"));
        assert!(store.load().unwrap().is_empty(), "nothing stored for refused input");

        add_webpush(&config, args(url, &p256dh, &auth, &["MessageNew"])).unwrap();
        let first = store.load().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].target, Target::Webpush { endpoint: url.into(), p256dh: p256dh.clone(), auth: auth.clone() });
        assert_eq!(first[0].events, [push::ExternalEventKind::MessageNew]);

        // The same subscription again: nothing changes.
        add_webpush(&config, args(url, &p256dh, &auth, &["MessageNew"])).unwrap();
        assert_eq!(store.load().unwrap(), first);

        // New keys for the same endpoint replace the registration.
        let (p256dh2, auth2) = other_browser_keys();
        add_webpush(&config, args(url, &p256dh2, &auth2, &[])).unwrap();
        let second = store.load().unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].id, first[0].id);
        assert_eq!(second[0].target, Target::Webpush { endpoint: url.into(), p256dh: p256dh2, auth: auth2 });

        // Another endpoint is another registration.
        add_webpush(&config, args("https://push.example.net/sub/2", &p256dh, &auth, &[])).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
    }

    #[test]
    fn subscription_json_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let (p256dh, auth) = browser_keys();
        let file = dir.path().join("sub.json");
        let json = serde_json::json!({"endpoint": "https://push.example.net/s", "expirationTime": null, "keys": {"p256dh": p256dh, "auth": auth}});
        std::fs::write(&file, json.to_string()).unwrap();
        let from_file = AddWebPushArgs { user: "alice".into(), endpoint: None, p256dh: None, auth: None, subscription: Some(file.clone()), events: Vec::new() };
        add_webpush(&config, from_file).unwrap();
        let regs = RegistrationStore::new(&dir.path().join("push")).load().unwrap();
        assert_eq!(regs[0].target, Target::Webpush { endpoint: "https://push.example.net/s".into(), p256dh, auth });

        std::fs::write(&file, r#"{"endpoint": "https://push.example.net/s"}"#).unwrap();
        let bad = AddWebPushArgs { user: "alice".into(), endpoint: None, p256dh: None, auth: None, subscription: Some(file), events: Vec::new() };
        assert!(format!("{:#}", add_webpush(&config, bad).unwrap_err()).contains("not a PushSubscription JSON"));
    }

    #[test]
    fn vapid_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let path = dir.path().join("push").join("vapid-private.pem");
        vapid_public_key(&config).unwrap();
        let pem = std::fs::read(&path).unwrap();
        vapid_public_key(&config).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), pem);
        std::fs::write(&path, "garbage").unwrap();
        assert!(format!("{:#}", vapid_public_key(&config).unwrap_err()).contains("invalid VAPID key file"));
    }
}
