//! `dormouse config`: print the example, check or show the active configuration.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::exit;
use crate::config::{Config, EXAMPLE_CONFIG};

/// Arguments of `dormouse config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the commented example configuration with every default.
    #[arg(long)]
    pub example: bool,
    /// What to do with the active configuration.
    #[command(subcommand)]
    pub action: Option<ConfigAction>,
}

/// `config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Parse the active configuration and report errors (exit 78 if invalid).
    Check,
    /// Print the effective configuration (defaults filled in, secrets redacted) as TOML.
    Show,
}

/// Prints [`EXAMPLE_CONFIG`].
pub fn print_example() -> ExitCode {
    print!("{EXAMPLE_CONFIG}");
    ExitCode::SUCCESS
}

/// Runs `config check` / `config show` (the config was already loaded and
/// validated by `main`, which exits 78 on errors).
pub fn run(config: &Config, path: Option<&Path>, args: &ConfigArgs) -> ExitCode {
    match args.action {
        Some(ConfigAction::Check) => {
            // Needs the kernel, not just the file: "on" without kTLS would fail at startup.
            if config.tls.kernel_tls == imap::server::ktls::KernelTlsMode::On {
                let found = imap::server::ktls::probe();
                if !found.available {
                    eprintln!("dormouse: {}", imap::server::ktls::KernelTlsError::Required(found));
                    return ExitCode::from(exit::CONFIG);
                }
            }
            match path {
                Some(p) => println!("configuration OK: {}", p.display()),
                None => println!("no configuration file (--config or DORMOUSE_CONFIG): using the defaults"),
            }
            ExitCode::SUCCESS
        }
        // Passwords, tokens and key seeds never reach the terminal (or a
        // bug report pasted from it).
        Some(ConfigAction::Show) => match toml::to_string_pretty(&config.redacted()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dormouse: cannot render the configuration: {e}");
                ExitCode::from(exit::SOFTWARE)
            }
        },
        None => {
            eprintln!("dormouse config: use --example, `check` or `show`");
            ExitCode::from(exit::USAGE)
        }
    }
}
