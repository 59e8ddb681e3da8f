//! The expunge log kept in the mailbox index: which UIDs were expunged at
//! which MODSEQ, so QRESYNC clients can be told `VANISHED (EARLIER)`.

use serde::{Deserialize, Serialize};

use crate::UidSet;

/// Most entries kept; older ones are dropped and raise [`ExpungeLog::floor`].
pub const MAX_ENTRIES: usize = 4096;

/// Expunges by MODSEQ, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpungeLog {
    /// The log is complete for expunges with MODSEQ above this value.
    pub floor: u64,
    /// `(modseq, uids)` in ascending MODSEQ order.
    pub entries: Vec<(u64, UidSet)>,
}

impl ExpungeLog {
    /// An empty log that is complete from `floor` on.
    pub fn starting_at(floor: u64) -> Self {
        ExpungeLog { floor, entries: Vec::new() }
    }

    /// Records `uids` expunged at `modseq`.
    pub fn record(&mut self, modseq: u64, uids: &UidSet) {
        if uids.is_empty() {
            return;
        }
        match self.entries.last_mut() {
            Some((m, set)) if *m == modseq => {
                *set = UidSet::from_ranges(set.ranges().iter().chain(uids.ranges()).copied());
            }
            _ => self.entries.push((modseq, uids.clone())),
        }
        if self.entries.len() > MAX_ENTRIES {
            let drop = self.entries.len() - MAX_ENTRIES;
            self.floor = self.entries[drop - 1].0;
            self.entries.drain(..drop);
        }
    }

    /// UIDs expunged with MODSEQ greater than `modseq`; `None` if the log
    /// does not reach back that far.
    pub fn since(&self, modseq: u64) -> Option<UidSet> {
        if modseq < self.floor {
            return None;
        }
        let ranges = self
            .entries
            .iter()
            .filter(|(m, _)| *m > modseq)
            .flat_map(|(_, set)| set.ranges().iter().copied());
        Some(UidSet::from_ranges(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_and_floor() {
        let mut log = ExpungeLog::starting_at(3);
        log.record(5, &UidSet::from_range(1, 2));
        log.record(5, &UidSet::from_range(4, 4));
        log.record(8, &UidSet::from_range(10, 11));
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.since(2), None);
        assert_eq!(log.since(3).unwrap().to_imap_string(), "1:2,4,10:11");
        assert_eq!(log.since(5).unwrap().to_imap_string(), "10:11");
        assert!(log.since(8).unwrap().is_empty());
    }

    #[test]
    fn bounded() {
        let mut log = ExpungeLog::starting_at(1);
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            log.record(i + 2, &UidSet::from_range(i as u32 + 1, i as u32 + 1));
        }
        assert_eq!(log.entries.len(), MAX_ENTRIES);
        assert_eq!(log.floor, 11);
        assert_eq!(log.since(10), None);
        assert_eq!(log.since(11).unwrap().first(), Some(11));
    }
}
