//! The `dormouse` binary: one executable with subcommands (`serve`, `deliver`,
//! `config`, `user`). Argument parsing and dispatch only; the work is in
//! [`cli`] and the library crates.

mod cli;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::exit;
use crate::config::Config;

/// jemalloc instead of glibc's malloc, for every dormouse process (master,
/// workers, hibernate processes: all are this binary). Why: measured with
/// `examples/bench_sessions` (20,000 plain sessions parked, then all gone),
/// glibc kept 268 MiB after every client had left (fresh: 44 MiB), its
/// per-thread arenas holding the pages of the login burst; jemalloc with
/// the options below kept 128 MiB. mimalloc (v3) did worse than both here:
/// 785 MiB, its per-thread heaps grew with the workers' blocking threads.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options: a background thread per process returns
/// freed pages after about a second even when the process is otherwise idle
/// (a hibernate process may not allocate for hours), instead of only on the
/// next allocation. `MALLOC_CONF`/`_RJEM_MALLOC_CONF` in the environment
/// still override them.
#[allow(unsafe_code, non_upper_case_globals)]
// SAFETY: jemalloc reads this symbol (the prefixed build's name for its
// `const char *malloc_conf`) once, at its first allocation, as a pointer to
// a NUL-terminated string; a reference to a byte array is such a pointer and
// the bytes are static and end in NUL. Nothing else defines the symbol.
#[export_name = "_rjem_malloc_conf"]
static malloc_conf: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// An IMAP server where an idle session costs almost nothing.
#[derive(Debug, Parser)]
#[command(name = "dormouse", version, about)]
struct Cli {
    /// Configuration file (TOML). Default: $DORMOUSE_CONFIG, else built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (LMTP, IMAP) in the foreground until SIGINT/SIGTERM.
    Serve(cli::serve::ServeArgs),
    /// Deliver one message read from stdin (local delivery agent, sysexits exit codes).
    Deliver(cli::deliver::DeliverArgs),
    /// Print the example configuration, or check / show the active one.
    Config(cli::config_cmd::ConfigArgs),
    /// Manage passwd-file users.
    User(cli::user::UserArgs),
    /// IMAP worker process, started by `serve` (internal).
    #[command(hide = true)]
    Worker(cli::worker::WorkerArgs),
    /// Hibernate process, started by `serve` (internal).
    #[command(hide = true)]
    Hibernate(cli::hibernate::HibernateArgs),
    /// List every session: pre-login, live in a worker, hibernated (user, peer, TLS, state, mailbox, since, process).
    Who(cli::who::WhoArgs),
    /// Disconnect a user's sessions (or a client address's) everywhere; prints how many.
    Kick(cli::who::KickArgs),
    /// Restart `serve` (onto the binary now on disk) without closing a client connection; prints how many sessions moved.
    Restart(cli::restart::RestartArgs),
    /// Print the hibernate processes' counters.
    Stats(cli::hibernate::QueryArgs),
    /// Webhook / Web Push relay: `run`, and manage registrations.
    PushRelay(cli::push_relay::PushRelayArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(exit::USAGE) } else { ExitCode::SUCCESS };
        }
    };
    // `config --example` needs no (valid) configuration.
    if let Command::Config(args) = &cli.command {
        if args.example {
            return cli::config_cmd::print_example();
        }
    }
    let (config, path) = match Config::load_or_default(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("dormouse: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let is_serve = matches!(cli.command, Command::Serve(_) | Command::Worker(_) | Command::Hibernate(_))
        || matches!(&cli.command, Command::PushRelay(a) if a.is_run());
    cli::logging::init(&config, is_serve);
    // Every process that opens mailboxes (workers, hibernate processes,
    // LMTP in serve, deliver) bounds its load cache the same way.
    storage_hooks::load_cache::configure(config.storage.load_cache_limits());
    match cli.command {
        Command::Serve(args) => cli::report(cli::serve::run(config, path, args)),
        Command::Deliver(args) => cli::deliver::run(&config, &args),
        Command::Config(args) => cli::config_cmd::run(&config, path.as_deref(), &args),
        Command::User(args) => cli::report(cli::user::run(&config, args)),
        Command::Worker(args) => cli::report(cli::worker::run(config, path, args)),
        Command::Hibernate(args) => cli::report(cli::hibernate::run(config, path, args)),
        Command::Who(args) => cli::report(cli::who::who(&config, &args)),
        Command::Kick(args) => cli::report(cli::who::kick(&config, &args)),
        Command::Restart(args) => cli::report(cli::restart::run(&config, &args)),
        Command::Stats(_) => cli::report(cli::hibernate::stats(&config)),
        Command::PushRelay(args) => cli::report(cli::push_relay::run(config, args)),
    }
}
