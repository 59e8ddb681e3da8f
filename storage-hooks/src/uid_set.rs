//! Compact sets of UIDs stored as sorted, non-overlapping inclusive ranges.

use serde::{Deserialize, Serialize};

/// An inclusive range of UIDs, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidRange {
    /// First UID in the range.
    pub first: u32,
    /// Last UID in the range (inclusive, `last >= first`).
    pub last: u32,
}

impl UidRange {
    /// Number of UIDs in the range.
    pub fn len(&self) -> u64 {
        u64::from(self.last) - u64::from(self.first) + 1
    }

    /// Always false: a range holds at least one UID.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A set of UIDs, kept as sorted, merged ranges so that a mailbox of 100,000
/// consecutive UIDs costs one range, not 100,000 integers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidSet {
    ranges: Vec<UidRange>,
}

impl UidSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding `first..=last`; empty if `first > last` or `first == 0`.
    pub fn from_range(first: u32, last: u32) -> Self {
        let mut set = Self::new();
        if first != 0 && first <= last {
            set.ranges.push(UidRange { first, last });
        }
        set
    }

    /// The ranges, sorted and non-adjacent.
    pub fn ranges(&self) -> &[UidRange] {
        &self.ranges
    }

    /// Rebuilds a set from arbitrary (possibly unsorted, overlapping) ranges,
    /// e.g. after deserializing untrusted input. Ranges with `first > last` or
    /// UID 0 are dropped.
    pub fn from_ranges(ranges: impl IntoIterator<Item = UidRange>) -> Self {
        let mut v: Vec<UidRange> = ranges
            .into_iter()
            .filter(|r| r.first != 0 && r.first <= r.last)
            .collect();
        v.sort_by_key(|r| r.first);
        let mut out: Vec<UidRange> = Vec::with_capacity(v.len());
        for r in v {
            match out.last_mut() {
                Some(last) if u64::from(r.first) <= u64::from(last.last) + 1 => {
                    last.last = last.last.max(r.last);
                }
                _ => out.push(r),
            }
        }
        Self { ranges: out }
    }

    /// Adds one UID (UID 0 is not a valid UID and is ignored).
    pub fn insert(&mut self, uid: u32) {
        if uid == 0 {
            return;
        }
        // Fast path: appending in ascending order, the common case.
        if let Some(last) = self.ranges.last_mut() {
            if uid > last.last {
                if uid == last.last + 1 {
                    last.last = uid;
                } else {
                    self.ranges.push(UidRange { first: uid, last: uid });
                }
                return;
            }
        } else {
            self.ranges.push(UidRange { first: uid, last: uid });
            return;
        }
        if self.contains(uid) {
            return;
        }
        let mut ranges = std::mem::take(&mut self.ranges);
        ranges.push(UidRange { first: uid, last: uid });
        *self = Self::from_ranges(ranges);
    }

    /// Removes one UID.
    pub fn remove(&mut self, uid: u32) {
        let Some(idx) = self.find(uid) else { return };
        let r = self.ranges[idx];
        match (r.first == uid, r.last == uid) {
            (true, true) => {
                self.ranges.remove(idx);
            }
            (true, false) => self.ranges[idx].first = uid + 1,
            (false, true) => self.ranges[idx].last = uid - 1,
            (false, false) => {
                self.ranges[idx].last = uid - 1;
                self.ranges.insert(idx + 1, UidRange { first: uid + 1, last: r.last });
            }
        }
    }

    fn find(&self, uid: u32) -> Option<usize> {
        let idx = self.ranges.partition_point(|r| r.last < uid);
        (idx < self.ranges.len() && self.ranges[idx].first <= uid).then_some(idx)
    }

    /// True if `uid` is in the set.
    pub fn contains(&self, uid: u32) -> bool {
        self.find(uid).is_some()
    }

    /// Number of UIDs in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(UidRange::len).sum()
    }

    /// True if the set holds no UID.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Smallest UID, if any.
    pub fn first(&self) -> Option<u32> {
        self.ranges.first().map(|r| r.first)
    }

    /// Largest UID, if any.
    pub fn last(&self) -> Option<u32> {
        self.ranges.last().map(|r| r.last)
    }

    /// Iterates over every UID in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|r| r.first..=r.last)
    }

    /// Position of `uid` among the set's members (0-based), if present: this is
    /// how a mailbox view turns a UID into a sequence number.
    pub fn rank(&self, uid: u32) -> Option<u64> {
        let idx = self.find(uid)?;
        let before: u64 = self.ranges[..idx].iter().map(UidRange::len).sum();
        Some(before + u64::from(uid - self.ranges[idx].first))
    }

    /// Formats as IMAP sequence-set syntax, e.g. `1:5,7,9:12`; empty string
    /// for an empty set.
    pub fn to_imap_string(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if r.first == r.last {
                s.push_str(&r.first.to_string());
            } else {
                s.push_str(&format!("{}:{}", r.first, r.last));
            }
        }
        s
    }
}

impl FromIterator<u32> for UidSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut set = UidSet::new();
        for uid in iter {
            set.insert(uid);
        }
        set
    }
}

impl Extend<u32> for UidSet {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, iter: I) {
        for uid in iter {
            self.insert(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_ranks() {
        let set: UidSet = [5, 1, 2, 3, 9, 4, 10, 7].into_iter().collect();
        assert_eq!(set.to_imap_string(), "1:5,7,9:10");
        assert_eq!(set.len(), 8);
        assert_eq!(set.rank(7), Some(5));
        assert_eq!(set.rank(6), None);
        assert_eq!(set.rank(10), Some(7));
    }

    #[test]
    fn remove_splits() {
        let mut set = UidSet::from_range(1, 10);
        set.remove(5);
        set.remove(1);
        set.remove(10);
        assert_eq!(set.to_imap_string(), "2:4,6:9");
        set.remove(42);
        assert_eq!(set.len(), 7);
    }

    #[test]
    fn from_ranges_sanitizes_untrusted_input() {
        let set = UidSet::from_ranges([
            UidRange { first: 9, last: 3 },
            UidRange { first: 0, last: 0 },
            UidRange { first: 4, last: 6 },
            UidRange { first: 1, last: 4 },
            UidRange { first: 7, last: 7 },
        ]);
        assert_eq!(set.to_imap_string(), "1:7");
    }

    #[test]
    fn max_uid_does_not_overflow() {
        let mut set = UidSet::new();
        set.insert(u32::MAX);
        set.insert(u32::MAX - 1);
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_imap_string(), format!("{}:{}", u32::MAX - 1, u32::MAX));
    }
}
