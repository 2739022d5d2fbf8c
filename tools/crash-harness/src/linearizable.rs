//! The linearizability checker: Wing & Gong's search with Lowe's memoization (the algorithm of
//! Porcupine and Knossos' `wgl`), for one key's history against a register model (put/get).
//!
//! An operation is an interval `[call, ret]` on one clock. A write whose reply was lost is
//! *indeterminate*: it has `ret = None` (an open end, after every other event), so the search may
//! place it anywhere after its call, including after everything else, which is the same as never
//! having happened. A read whose reply was lost constrains nothing and is not recorded.
//!
//! Values are unique per write (writer id + sequence), so a register value is a `u64` id and
//! `0` means "absent" (the key's initial state).
//!
//! Lowe's cache remembers each (set of linearized operations, register value) already explored.
//! The set is kept as a 128-bit Zobrist fingerprint (the XOR of a random key per operation),
//! updated in O(1) per step, so an entry costs 24 bytes whatever the history's length; two sets
//! colliding (which could only hide a linearization, never invent one) has a probability around
//! entries² / 2¹²⁹, nil at any budget this harness allows.

use std::collections::HashSet;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Set the register to this value id (never 0).
    Write(u64),
    /// Read the register and saw this value id (0: absent).
    Read(u64),
}

/// One operation of one key's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// What it did.
    pub op: Op,
    /// When it was sent (any monotonic unit).
    pub call: u64,
    /// When its reply arrived; `None` when the outcome is unknown (only writes).
    pub ret: Option<u64>,
}

/// The verdict for one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, explains every read.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The search gave up after `steps` steps (the history is too concurrent to decide).
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

/// One event of the doubly linked list the search walks (index-based).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Operation index.
    op: usize,
    /// Whether this is the call (else the return).
    call: bool,
    /// The matching return's node (for calls).
    ret_node: usize,
    prev: usize,
    next: usize,
}

/// The sentinel head of the list.
const HEAD: usize = 0;
/// "No node".
const NIL: usize = usize::MAX;

/// Checks `history` against a register that starts absent; gives up after `max_steps`.
pub fn check(history: &[Entry], max_steps: u64) -> Verdict {
    let history = prune(history);
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events sorted by time; an open end sorts after everything. At equal times calls come
    // first, so operations that touch are concurrent (the permissive reading, as Porcupine).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in history.iter().enumerate() {
        events.push((e.call, true, i));
        events.push((e.ret.unwrap_or(u64::MAX), false, i));
    }
    events.sort_by_key(|&(t, call, i)| (t, !call, i));
    // node 0 is the head; event k is node k + 1
    let mut nodes = vec![Node { op: NIL, call: false, ret_node: NIL, prev: NIL, next: 1 }];
    let mut ret_of = vec![NIL; n];
    for (k, &(_, call, op)) in events.iter().enumerate() {
        let id = k + 1;
        nodes.push(Node {
            op,
            call,
            ret_node: NIL,
            prev: k,
            next: if k + 1 < events.len() { id + 1 } else { NIL },
        });
        if !call {
            ret_of[op] = id;
        }
    }
    for node in nodes.iter_mut().skip(1) {
        if node.call {
            node.ret_node = ret_of[node.op];
        }
    }

    let keys: Vec<u128> = (0..n as u64).map(zobrist).collect();
    let mut linearized: u128 = 0;
    let mut cache: HashSet<(u128, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut entry = nodes[HEAD].next;
    let mut steps = 0u64;

    while nodes[HEAD].next != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown { steps };
        }
        let node = nodes[entry];
        if node.call {
            let next_state = match history[node.op].op {
                Op::Write(v) => Some(v),
                Op::Read(v) if v == state => Some(state),
                Op::Read(_) => None,
            };
            let mut moved = false;
            if let Some(next_state) = next_state
                && cache.insert((linearized ^ keys[node.op], next_state))
            {
                linearized ^= keys[node.op];
                stack.push((entry, state));
                state = next_state;
                lift(&mut nodes, entry);
                entry = nodes[HEAD].next;
                moved = true;
            }
            if !moved {
                entry = node.next;
            }
        } else {
            // A return reached before its call was linearized: backtrack.
            let Some((call_node, prev_state)) = stack.pop() else {
                return Verdict::NotLinearizable;
            };
            state = prev_state;
            linearized ^= keys[nodes[call_node].op];
            unlift(&mut nodes, call_node);
            entry = nodes[call_node].next;
        }
    }
    Verdict::Linearizable
}

/// Operation `i`'s random 128-bit key (two rounds of splitmix64: deterministic, well mixed).
fn zobrist(i: u64) -> u128 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let hi = splitmix(i.wrapping_mul(2));
    let lo = splitmix(i.wrapping_mul(2) + 1);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// Where a history that is not linearizable first goes wrong: the operation whose completion
/// first makes the history unexplainable, found by bisecting on completion time. The cut at time
/// `t` keeps the operations called before `t`, those still open at `t` as indeterminate, and is
/// linearizable whenever the whole history is (restrict any linearization to it), so the first
/// failing cut is well defined. `None` when the history is linearizable (or undecided).
pub fn first_failure(history: &[Entry], max_steps: u64) -> Option<Entry> {
    let mut ends: Vec<(u64, usize)> =
        history.iter().enumerate().filter_map(|(i, e)| e.ret.map(|t| (t, i))).collect();
    ends.sort_unstable();
    let cut = |k: usize| -> Vec<Entry> {
        let t = ends[k].0;
        history
            .iter()
            .filter(|e| e.call <= t)
            .filter_map(|e| match (e.op, e.ret) {
                (_, Some(r)) if r <= t => Some(*e),
                (Op::Write(_), _) => Some(Entry { ret: None, ..*e }),
                (Op::Read(_), _) => None,
            })
            .collect()
    };
    let fails = |k: usize| check(&cut(k), max_steps) == Verdict::NotLinearizable;
    if ends.is_empty() || !fails(ends.len() - 1) {
        return None;
    }
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(mid) { hi = mid } else { lo = mid + 1 }
    }
    Some(history[ends[lo].1])
}

/// Unlinks a call and its return.
fn lift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].ret_node;
    for id in [call, ret] {
        let Node { prev, next, .. } = nodes[id];
        nodes[prev].next = next;
        if next != NIL {
            nodes[next].prev = prev;
        }
    }
}

/// Relinks what [`lift`] unlinked (in reverse order: the return first).
fn unlift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].ret_node;
    for id in [ret, call] {
        let Node { prev, next, .. } = nodes[id];
        nodes[prev].next = id;
        if next != NIL {
            nodes[next].prev = id;
        }
    }
}

/// Drops indeterminate writes that no read observed. Sound for a register with unique values:
/// such a write can always be placed last (it has an open end), and in any linearization that
/// places it earlier no read falls between it and the next write (none saw its value), so removing
/// it keeps that linearization valid. It also keeps the search from branching on every one of them.
fn prune(history: &[Entry]) -> Vec<Entry> {
    let seen: HashSet<u64> = history
        .iter()
        .filter_map(|e| match e.op {
            Op::Read(v) => Some(v),
            Op::Write(_) => None,
        })
        .collect();
    history
        .iter()
        .filter(|e| !(e.ret.is_none() && matches!(e.op, Op::Write(v) if !seen.contains(&v))))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 10_000_000;

    fn w(v: u64, call: u64, ret: u64) -> Entry {
        Entry { op: Op::Write(v), call, ret: Some(ret) }
    }
    fn wi(v: u64, call: u64) -> Entry {
        Entry { op: Op::Write(v), call, ret: None }
    }
    fn r(v: u64, call: u64, ret: u64) -> Entry {
        Entry { op: Op::Read(v), call, ret: Some(ret) }
    }
    fn ok(h: &[Entry]) -> bool {
        match check(h, BUDGET) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable => false,
            Verdict::Unknown { steps } => panic!("undecided after {steps} steps: {h:?}"),
        }
    }

    #[test]
    fn sequential_histories() {
        assert!(ok(&[]));
        assert!(ok(&[r(0, 0, 1)]), "absent at first");
        assert!(ok(&[w(1, 0, 1), r(1, 2, 3), w(2, 4, 5), r(2, 6, 7)]));
        assert!(!ok(&[w(1, 0, 1), r(0, 2, 3)]), "a completed write is lost");
        assert!(!ok(&[w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)]), "a stale read");
        assert!(!ok(&[r(1, 0, 1), w(1, 2, 3)]), "a read from the future");
        assert!(!ok(&[w(1, 0, 1), r(7, 2, 3)]), "a value nobody wrote");
    }

    #[test]
    fn concurrency_allows_either_order() {
        // two overlapping writes, then reads that agree on either order
        assert!(ok(&[w(1, 0, 10), w(2, 5, 15), r(1, 20, 21)]));
        assert!(ok(&[w(1, 0, 10), w(2, 5, 15), r(2, 20, 21)]));
        // a read overlapping a write may see old or new
        assert!(ok(&[w(1, 0, 1), w(2, 5, 15), r(1, 6, 7), r(2, 8, 9)]));
        // touching intervals are concurrent
        assert!(ok(&[w(1, 0, 5), r(1, 5, 6)]));
        assert!(ok(&[r(1, 0, 5), w(1, 5, 6)]));
    }

    #[test]
    fn new_then_old_is_not_linearizable() {
        // a write in progress: once one read saw the new value, a later read cannot see the old
        assert!(!ok(&[w(1, 0, 1), w(2, 5, 100), r(2, 10, 20), r(1, 30, 40)]));
        assert!(!ok(&[w(1, 0, 100), r(1, 10, 20), r(0, 30, 40)]));
        // two writers, two readers that disagree on their order, not overlapping each other
        assert!(!ok(&[w(1, 0, 100), w(2, 0, 100), r(1, 10, 11), r(2, 12, 13), r(1, 14, 15)]));
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_happen() {
        assert!(ok(&[w(1, 0, 1), wi(2, 2), r(1, 3, 4)]), "never happened");
        assert!(ok(&[w(1, 0, 1), wi(2, 2), r(2, 30, 40)]), "happened, seen late");
        assert!(ok(&[w(1, 0, 1), wi(2, 2), r(1, 3, 4), r(2, 5, 6), w(3, 7, 8), r(3, 9, 10)]));
        assert!(!ok(&[w(1, 0, 1), wi(2, 2), r(2, 3, 4), r(1, 5, 6)]), "seen, then unseen");
        assert!(!ok(&[wi(2, 10), r(2, 0, 5)]), "seen before it was sent");
        assert!(!ok(&[w(1, 0, 1), wi(2, 2), r(2, 3, 4), w(3, 5, 6), r(2, 7, 8)]), "applied twice");
    }

    /// A tiny deterministic generator (xorshift), so the randomized tests need no seed plumbing.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A history produced by a real register: each operation takes effect at one instant inside
    /// its interval, so the history is linearizable by construction.
    fn real_history(rng: &mut Rng, ops: usize, indeterminate: bool) -> Vec<Entry> {
        let mut points: Vec<(u64, bool)> = (0..ops).map(|_| (rng.below(1000), rng.below(2) == 0)).collect();
        points.sort();
        let mut value = 0;
        let mut next_value = 1;
        let mut out = Vec::new();
        for (at, write) in points {
            let call = at.saturating_sub(rng.below(60));
            let ret = at + rng.below(60);
            if write {
                value = next_value;
                next_value += 1;
                let open = indeterminate && rng.below(4) == 0;
                out.push(Entry { op: Op::Write(value), call, ret: if open { None } else { Some(ret) } });
            } else {
                out.push(r(value, call, ret));
            }
        }
        // indeterminate writes that did not happen at all
        if indeterminate {
            for _ in 0..rng.below(3) {
                out.push(wi(next_value, rng.below(1000)));
                next_value += 1;
            }
        }
        out
    }

    #[test]
    fn histories_of_a_real_register_pass() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let h = real_history(&mut rng, 5 + round % 60, round % 2 == 1);
            assert!(ok(&h), "round {round}: {h:?}");
        }
    }

    /// Brute force: tries every order of the operations (indeterminate writes may be left out).
    fn brute(h: &[Entry]) -> bool {
        fn go(h: &[Entry], done: &mut Vec<bool>, state: u64) -> bool {
            if h.iter().zip(done.iter()).all(|(e, &d)| d || e.ret.is_none()) {
                return true;
            }
            for i in 0..h.len() {
                if done[i] {
                    continue;
                }
                // i may go next only if no pending operation returned before i was called
                let blocked =
                    h.iter().zip(done.iter()).any(|(e, &d)| !d && e.ret.is_some_and(|t| t < h[i].call));
                if blocked {
                    continue;
                }
                let next = match h[i].op {
                    Op::Write(v) => v,
                    Op::Read(v) if v == state => state,
                    Op::Read(_) => continue,
                };
                done[i] = true;
                let found = go(h, done, next);
                done[i] = false;
                if found {
                    return true;
                }
            }
            false
        }
        go(h, &mut vec![false; h.len()], 0)
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + rng.below(7) as usize;
            let h: Vec<Entry> = (0..n)
                .map(|i| {
                    let call = rng.below(20);
                    let ret = call + rng.below(8);
                    match rng.below(5) {
                        0 => wi(i as u64 + 1, call),
                        1 | 2 => w(i as u64 + 1, call, ret),
                        _ => r(rng.below(n as u64 + 1), call, ret),
                    }
                })
                .collect();
            let want = brute(&h);
            assert_eq!(ok(&h), want, "{h:?}");
            if want { yes += 1 } else { no += 1 }
        }
        // both verdicts were exercised: the comparison cannot pass by always answering one way
        assert!(yes > 300 && no > 300, "yes {yes}, no {no}");
    }

    #[test]
    fn the_first_failure_is_the_operation_that_cannot_be_explained() {
        let stale = r(1, 40, 50);
        let h = [w(1, 0, 10), w(2, 20, 30), r(2, 32, 33), stale, w(3, 60, 70), r(3, 80, 90)];
        assert_eq!(first_failure(&h, BUDGET), Some(stale));
        assert_eq!(first_failure(&h[..3], BUDGET), None, "linearizable");
        // an indeterminate write seen, then unseen: the second read is the culprit
        let h = [w(1, 0, 1), wi(2, 2), r(2, 3, 4), r(1, 5, 6), r(1, 7, 8)];
        assert_eq!(first_failure(&h, BUDGET), Some(r(1, 5, 6)));
    }

    #[test]
    fn gives_up_within_the_budget() {
        let mut rng = Rng(7);
        let h = real_history(&mut rng, 200, false);
        assert!(matches!(check(&h, 3), Verdict::Unknown { .. }));
    }
}
