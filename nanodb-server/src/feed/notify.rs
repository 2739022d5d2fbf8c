//! Keyspace notifications: which key events are also published as Redis pub/sub messages, set by
//! `notify-keyspace-events` exactly as Redis spells it.
//!
//! `K` publishes `<event>` on `__keyspace@0__:<key>`, `E` publishes `<key>` on
//! `__keyevent@0__:<event>`; the class letters pick the events (`g` generic, `$` strings, `l`
//! lists, `h` hashes, `x` expired, `A` all of them). Letters for things NanoDB does not have (`s`
//! sets, `z` sorted sets, `e` evicted, `t` streams, `m` key misses, `d` modules, `n` new keys) are
//! accepted, shown back by CONFIG GET, and never fire.

use std::fmt;

/// The letters, in the order Redis prints them.
const CLASSES: &str = "g$lshzxetd";

/// A parsed `notify-keyspace-events` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotifyFlags(u32);

const KEYSPACE: u32 = 1 << 0;
const KEYEVENT: u32 = 1 << 1;
const MISS: u32 = 1 << 2;
const NEW: u32 = 1 << 3;

fn class_bit(c: char) -> Option<u32> {
    CLASSES.find(c).map(|i| 1 << (8 + i))
}

impl NotifyFlags {
    /// Nothing is published (the default, as in Redis).
    pub const OFF: Self = Self(0);

    /// Parses Redis's letters; an unknown letter is an error naming it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut bits = 0;
        for c in s.chars() {
            bits |= match c {
                'K' => KEYSPACE,
                'E' => KEYEVENT,
                'm' => MISS,
                'n' => NEW,
                'A' => CLASSES.chars().filter_map(class_bit).fold(0, |a, b| a | b),
                c => class_bit(c).ok_or_else(|| format!("unknown notify-keyspace-events letter '{c}'"))?,
            };
        }
        Ok(Self(bits))
    }

    /// Whether an event of `class` (a letter from [`super::RedisEvent::class`]) is published, and on
    /// which of the two channel families: `(keyspace, keyevent)`.
    pub fn publishes(self, class: char) -> (bool, bool) {
        let on = class_bit(class).is_some_and(|b| self.0 & b != 0);
        (on && self.0 & KEYSPACE != 0, on && self.0 & KEYEVENT != 0)
    }

    /// Whether any event can be published at all.
    pub fn any(self) -> bool {
        self.0 & (KEYSPACE | KEYEVENT) != 0 && self.0 >> 8 != 0
    }

    /// The raw bits (for storing in an atomic).
    pub fn bits(self) -> u32 {
        self.0
    }

    /// From raw bits.
    pub fn from_bits(bits: u32) -> Self {
        Self(bits)
    }
}

impl fmt::Display for NotifyFlags {
    /// Redis's canonical form: `A` when every class is on, else the class letters; then `K`, `E`,
    /// `m`, `n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = CLASSES.chars().filter_map(class_bit).fold(0, |a, b| a | b);
        if self.0 & all == all {
            f.write_str("A")?;
        } else {
            for c in CLASSES.chars().filter(|&c| class_bit(c).is_some_and(|b| self.0 & b != 0)) {
                write!(f, "{c}")?;
            }
        }
        for (bit, c) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (MISS, 'm'), (NEW, 'n')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip_in_redis_order() {
        assert_eq!(NotifyFlags::parse("KEA").expect("succeeds").to_string(), "AKE");
        assert_eq!(NotifyFlags::parse("Ex$").expect("succeeds").to_string(), "$xE");
        assert_eq!(NotifyFlags::parse("").expect("succeeds"), NotifyFlags::OFF);
        assert!(NotifyFlags::parse("Kq").expect_err("fails").contains("'q'"));
    }

    #[test]
    fn classes_and_families_gate_publishing() {
        let f = NotifyFlags::parse("K$").expect("succeeds");
        assert_eq!(f.publishes('$'), (true, false));
        assert_eq!(f.publishes('h'), (false, false));
        assert!(f.any());
        // A class without a channel family publishes nothing, nor a family without a class.
        assert!(!NotifyFlags::parse("A").expect("succeeds").any());
        assert!(!NotifyFlags::parse("KE").expect("succeeds").any());
        assert_eq!(NotifyFlags::parse("Ex").expect("succeeds").publishes('x'), (false, true));
    }
}
