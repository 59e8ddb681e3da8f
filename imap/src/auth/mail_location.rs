//! The Maildir location template (`mail_location = "%h/Maildir"`).

use std::path::PathBuf;

/// Errors in a mail location template or its expansion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailLocationError {
    /// The template uses an unknown `%` variable.
    #[error("unknown variable %{0} in mail_location (known: %h %u %n %d %%)")]
    UnknownVariable(char),
    /// The template ends with a lone `%`.
    #[error("mail_location ends with a lone %")]
    TrailingPercent,
    /// The template is empty.
    #[error("mail_location is empty")]
    Empty,
    /// The template needs the home directory but the user has none.
    #[error("user {0} has no home directory but mail_location uses %h or ~/")]
    NoHome(String),
    /// The expansion is not an absolute path.
    #[error("mail location for user {0} is not an absolute path")]
    NotAbsolute(String),
}

/// A parsed template: `%h` home, `%u` user, `%n` local part, `%d` domain,
/// `%%` a percent sign; a leading `~/` means `%h/`. A Dovecot-style
/// `maildir:` prefix is accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLocation {
    template: String,
}

impl MailLocation {
    /// Parses and checks a template.
    ///
    /// # Errors
    /// [`MailLocationError`] for empty templates and unknown variables.
    pub fn parse(template: &str) -> Result<Self, MailLocationError> {
        let t = template.trim();
        let t = t.strip_prefix("maildir:").unwrap_or(t);
        let t = match t.strip_prefix("~/") {
            Some(rest) => format!("%h/{rest}"),
            None if t == "~" => "%h".to_string(),
            None => t.to_string(),
        };
        if t.is_empty() {
            return Err(MailLocationError::Empty);
        }
        let mut chars = t.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('h' | 'u' | 'n' | 'd' | '%') => {}
                    Some(other) => return Err(MailLocationError::UnknownVariable(other)),
                    None => return Err(MailLocationError::TrailingPercent),
                }
            }
        }
        Ok(MailLocation { template: t })
    }

    /// Expands the template for `user` with home directory `home`.
    ///
    /// # Errors
    /// [`MailLocationError::NoHome`] when `%h` is used and `home` is empty,
    /// [`MailLocationError::NotAbsolute`] when the result is relative.
    pub fn expand(&self, user: &str, home: &str) -> Result<PathBuf, MailLocationError> {
        let (local, domain) = user.split_once('@').unwrap_or((user, ""));
        let mut out = String::new();
        let mut chars = self.template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('h') if home.is_empty() => return Err(MailLocationError::NoHome(user.to_string())),
                Some('h') => out.push_str(home.trim_end_matches('/')),
                Some('u') => out.push_str(user),
                Some('n') => out.push_str(local),
                Some('d') => out.push_str(domain),
                // parse() only lets %% through otherwise.
                _ => out.push('%'),
            }
        }
        let path = PathBuf::from(out);
        if !path.is_absolute() {
            return Err(MailLocationError::NotAbsolute(user.to_string()));
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables() {
        let l = MailLocation::parse("%h/Maildir").unwrap();
        assert_eq!(l.expand("bob", "/home/bob/").unwrap(), PathBuf::from("/home/bob/Maildir"));
        let l = MailLocation::parse("/var/mail/%d/%n/100%%").unwrap();
        assert_eq!(l.expand("bob@ex.org", "").unwrap(), PathBuf::from("/var/mail/ex.org/bob/100%"));
        let l = MailLocation::parse("maildir:~/Mail").unwrap();
        assert_eq!(l.expand("u", "/h/u").unwrap(), PathBuf::from("/h/u/Mail"));
        assert_eq!(MailLocation::parse("/m/%u").unwrap().expand("a", "").unwrap(), PathBuf::from("/m/a"));
    }

    #[test]
    fn refuses_bad_templates_and_missing_homes() {
        assert_eq!(MailLocation::parse("%x"), Err(MailLocationError::UnknownVariable('x')));
        assert_eq!(MailLocation::parse("a%"), Err(MailLocationError::TrailingPercent));
        assert_eq!(MailLocation::parse(" "), Err(MailLocationError::Empty));
        let l = MailLocation::parse("%h/Maildir").unwrap();
        assert!(matches!(l.expand("bob", ""), Err(MailLocationError::NoHome(_))));
        let l = MailLocation::parse("mail/%u").unwrap();
        assert!(matches!(l.expand("bob", "/h"), Err(MailLocationError::NotAbsolute(_))));
    }
}
