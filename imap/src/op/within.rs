//! WITHIN (RFC 5032): `SEARCH YOUNGER n` / `OLDER n` compare internal dates
//! with the session's wall-clock time. The criteria themselves are parsed
//! by imap-codec (feature `ext_within`) and evaluated in `op::search`.

use std::time::SystemTime;

use crate::session::Session;

impl Session {
    /// The session's current wall-clock time in Unix seconds: the time at
    /// the session's creation plus the driver's clock since then (the
    /// `now` of the command being executed), so a test's clock (or a
    /// driver's) moves WITHIN's notion of "now" as it moves timeouts.
    pub(crate) fn wall_now(&self) -> i64 {
        let (instant, wall) = self.wall_anchor;
        let now = wall + self.last_activity.saturating_duration_since(instant);
        now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}
