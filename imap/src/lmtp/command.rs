//! Parsing of LMTP command lines (RFC 2033 / RFC 5321 syntax, leniently).

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `LHLO domain`.
    Lhlo(String),
    /// `HELO` / `EHLO`: not valid in LMTP.
    HeloEhlo,
    /// `MAIL FROM:<path> [params]`.
    Mail(MailFrom),
    /// `RCPT TO:<path> [params]`.
    Rcpt(String),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY x`.
    Vrfy,
    /// `HELP [x]`.
    Help,
    /// A known command we do not implement (STARTTLS, BDAT, AUTH, ...).
    NotImplemented,
    /// Not a command we know.
    Unknown,
}

/// `MAIL FROM` data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailFrom {
    /// The reverse path without brackets; empty for the null sender `<>`.
    pub sender: String,
    /// The `SIZE=` parameter, if given.
    pub size: Option<u64>,
    /// True if `BODY=8BITMIME` was given.
    pub eight_bit: bool,
}

/// Why a command line was refused (reply 501 or 555).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError {
    /// Bad arguments: 501 5.5.4.
    Arguments(&'static str),
    /// An ESMTP parameter we do not support: 555 5.5.4.
    UnsupportedParameter,
}

/// Extracts `<path>` after `prefix:` (e.g. `FROM:`), returning the path and the
/// rest (the parameters).
fn path_arg<'a>(args: &'a str, prefix: &str) -> Result<(&'a str, &'a str), SyntaxError> {
    let head = args.get(..prefix.len()).ok_or(SyntaxError::Arguments("missing address"))?;
    if !head.eq_ignore_ascii_case(prefix) {
        return Err(SyntaxError::Arguments("expected FROM:<address> or TO:<address>"));
    }
    let rest = args[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<').ok_or(SyntaxError::Arguments("address must be in <>"))?;
    let end = rest.find('>').ok_or(SyntaxError::Arguments("missing > after address"))?;
    let path = &rest[..end];
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SyntaxError::Arguments("invalid characters in address"));
    }
    // A source route (<@a,@b:user@c>) is obsolete; keep only the mailbox.
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':').map(|(_, p)| p).ok_or(SyntaxError::Arguments("bad source route"))?,
        None => path,
    };
    Ok((path, rest[end + 1..].trim()))
}

impl Command {
    /// Parses one command line (without its line ending).
    ///
    /// # Errors
    /// [`SyntaxError`] for malformed arguments of a known command.
    pub fn parse(line: &str) -> Result<Command, SyntaxError> {
        let line = line.trim_end();
        let (verb, args) = match line.split_once(' ') {
            Some((v, a)) => (v, a.trim_start()),
            None => (line, ""),
        };
        let verb = verb.to_ascii_uppercase();
        let no_args = |cmd: Command| {
            if args.is_empty() {
                Ok(cmd)
            } else {
                Err(SyntaxError::Arguments("this command takes no arguments"))
            }
        };
        match verb.as_str() {
            "LHLO" => {
                if args.is_empty() || args.contains(' ') {
                    Err(SyntaxError::Arguments("usage: LHLO domain"))
                } else {
                    Ok(Command::Lhlo(args.to_string()))
                }
            }
            "HELO" | "EHLO" => Ok(Command::HeloEhlo),
            "MAIL" => {
                let (sender, params) = path_arg(args, "FROM:")?;
                let mut mail = MailFrom { sender: sender.to_string(), ..MailFrom::default() };
                for param in params.split_whitespace() {
                    let (key, value) = param.split_once('=').unwrap_or((param, ""));
                    match key.to_ascii_uppercase().as_str() {
                        "SIZE" => {
                            mail.size = Some(value.parse().map_err(|_| SyntaxError::Arguments("bad SIZE value"))?);
                        }
                        "BODY" => match value.to_ascii_uppercase().as_str() {
                            "7BIT" => mail.eight_bit = false,
                            "8BITMIME" => mail.eight_bit = true,
                            _ => return Err(SyntaxError::UnsupportedParameter),
                        },
                        _ => return Err(SyntaxError::UnsupportedParameter),
                    }
                }
                Ok(Command::Mail(mail))
            }
            "RCPT" => {
                let (rcpt, params) = path_arg(args, "TO:")?;
                if !params.is_empty() {
                    return Err(SyntaxError::UnsupportedParameter);
                }
                if rcpt.is_empty() {
                    return Err(SyntaxError::Arguments("empty recipient"));
                }
                Ok(Command::Rcpt(rcpt.to_string()))
            }
            "DATA" => no_args(Command::Data),
            "RSET" => no_args(Command::Rset),
            "QUIT" => no_args(Command::Quit),
            "NOOP" => Ok(Command::Noop),
            "VRFY" => {
                if args.is_empty() {
                    Err(SyntaxError::Arguments("usage: VRFY address"))
                } else {
                    Ok(Command::Vrfy)
                }
            }
            "HELP" => Ok(Command::Help),
            "STARTTLS" | "BDAT" | "AUTH" | "EXPN" | "TURN" | "ETRN" | "XCLIENT" | "XFORWARD" => {
                Ok(Command::NotImplemented)
            }
            _ => Ok(Command::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(Command::parse("lhlo mx.example"), Ok(Command::Lhlo("mx.example".into())));
        assert_eq!(
            Command::parse("MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME"),
            Ok(Command::Mail(MailFrom { sender: "a@b".into(), size: Some(100), eight_bit: true }))
        );
        assert_eq!(Command::parse("mail from: <>"), Ok(Command::Mail(MailFrom::default())));
        assert_eq!(Command::parse("RCPT TO:<u+d@x>"), Ok(Command::Rcpt("u+d@x".into())));
        assert_eq!(Command::parse("RCPT TO:<@r1,@r2:u@x>"), Ok(Command::Rcpt("u@x".into())));
        assert_eq!(Command::parse("DATA"), Ok(Command::Data));
        assert_eq!(Command::parse("noop hello"), Ok(Command::Noop));
        assert_eq!(Command::parse("VRFY x"), Ok(Command::Vrfy));
        assert_eq!(Command::parse("EHLO x"), Ok(Command::HeloEhlo));
        assert_eq!(Command::parse("BDAT 10"), Ok(Command::NotImplemented));
        assert_eq!(Command::parse("FROB"), Ok(Command::Unknown));
        assert_eq!(Command::parse(""), Ok(Command::Unknown));
    }

    #[test]
    fn refuses_bad_arguments() {
        for line in [
            "LHLO",
            "LHLO a b",
            "MAIL TO:<a>",
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a b>",
            "MAIL FROM:<a> SIZE=x",
            "MAIL",
            "RCPT TO:<>",
            "DATA now",
            "VRFY",
        ] {
            assert!(matches!(Command::parse(line), Err(SyntaxError::Arguments(_))), "{line}");
        }
        for line in ["MAIL FROM:<a> BODY=BINARYMIME", "MAIL FROM:<a> RET=FULL", "RCPT TO:<a> NOTIFY=NEVER"] {
            assert_eq!(Command::parse(line), Err(SyntaxError::UnsupportedParameter), "{line}");
        }
    }
}
