//! The group workload (issue #18): multi-key operations that must survive `kill -9` whole or not
//! at all, since the server applies each as one atomic group and logs it as one record.
//!
//! - *Tagged MSETs*: writer `w`'s `n`-th group writes [`GROUP_SIZE`] fresh keys
//!   `<run>:g:<w>:<n>:<i>`, every one with the value `w:n` (MSET over RESP, the MULTI_PUT command
//!   over the binary protocol). A group is whole (every key, every value its tag) or absent;
//!   an acknowledged one is whole.
//! - *Transfers*: a fixed set of accounts `<run>:a:<i>` starts at [`BALANCE`] each. A transfer
//!   reads two balances with their versions, then writes both new balances and a marker
//!   `<run>:t:<w>:<n>` = `from>to:amount` as one transaction guarded by those versions: a TXN
//!   request whose compares are the versions (binary protocol), or WATCH + MULTI/EXEC (RESP, one
//!   node only: a cluster refuses MULTI). The sum over accounts never changes, and the balances
//!   are exactly the start plus the moves of the markers present: a transfer applied in part
//!   would break one or the other.
//!
//! Readers check isolation as they go (an MGET or a transaction of gets sees every group whole
//! and the sum conserved); the nemesis checks a restarted node before the run goes on; the final
//! state of every node is checked at the end ([`check_final`]).

use std::collections::{BTreeMap, HashMap};

use anyhow::bail;
use bytes::Bytes;
use nanodb_protocol::{Command, Compare, CompareOp, CompareTarget, Expiry, PutCondition, Reply, cmd};
use rand::Rng;
use rand::rngs::SmallRng;

use crate::client::{RespReply, TcpClient};

/// Keys per tagged MSET.
pub const GROUP_SIZE: u32 = 10;
/// Every account's starting balance.
pub const BALANCE: i64 = 1000;

/// The key `i` of writer `writer`'s `n`-th group.
pub fn group_key(run: &str, writer: u32, n: u32, i: u32) -> String {
    format!("{run}:g:{writer}:{n}:{i}")
}

/// The tag every key of a group holds.
pub fn tag(writer: u32, n: u32) -> String {
    format!("{writer}:{n}")
}

/// The keys of one group.
pub fn group_keys(run: &str, writer: u32, n: u32) -> Vec<String> {
    (0..GROUP_SIZE).map(|i| group_key(run, writer, n, i)).collect()
}

/// Account `i`'s key.
pub fn account_key(run: &str, i: u32) -> String {
    format!("{run}:a:{i}")
}

/// Every account's key.
pub fn account_keys(run: &str, accounts: u32) -> Vec<String> {
    (0..accounts).map(|i| account_key(run, i)).collect()
}

/// The marker key of writer `writer`'s `n`-th transfer.
pub fn marker_key(run: &str, writer: u32, n: u32) -> String {
    format!("{run}:t:{writer}:{n}")
}

/// What a transfer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// Debited account.
    pub from: u32,
    /// Credited account.
    pub to: u32,
    /// Amount (> 0).
    pub amount: i64,
}

impl Move {
    /// The marker's value.
    pub fn marker(&self) -> String {
        format!("{}>{}:{}", self.from, self.to, self.amount)
    }

    /// Parses a marker's value.
    pub fn parse(v: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(v).ok()?;
        let (from, rest) = s.split_once('>')?;
        let (to, amount) = rest.split_once(':')?;
        Some(Self { from: from.parse().ok()?, to: to.parse().ok()?, amount: amount.parse().ok()? })
    }
}

/// How a group write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged as applied.
    Applied,
    /// Answered as not applied (a transfer whose versions changed): it must never appear.
    Refused,
    /// No reply, a timeout or an error: it may or may not have applied.
    Unknown,
}

/// One tagged MSET.
#[derive(Debug, Clone)]
pub struct GroupOp {
    /// The writer.
    pub writer: u32,
    /// Its sequence number.
    pub n: u32,
    /// The outcome.
    pub outcome: Outcome,
}

/// One transfer that was sent.
#[derive(Debug, Clone)]
pub struct TransferOp {
    /// The writer.
    pub writer: u32,
    /// Its sequence number.
    pub n: u32,
    /// What it moves.
    pub mv: Move,
    /// The outcome.
    pub outcome: Outcome,
}

/// A RESP reply that is not an error, or the error as an `Err`.
fn resp_ok(r: RespReply, what: &str) -> anyhow::Result<RespReply> {
    match r {
        RespReply::Error(e) => bail!("{what}: error reply: {e}"),
        r => Ok(r),
    }
}

fn balance_of(v: Option<&[u8]>) -> anyhow::Result<i64> {
    let Some(v) = v else { bail!("an account is missing") };
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("an account holds {:?}, not a balance", String::from_utf8_lossy(v)))
}

fn put(key: &str, value: &str) -> Command {
    Command::Put(cmd::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        expiry: Expiry::Persist,
        condition: PutCondition::Always,
    })
}

/// Chooses a transfer: two distinct accounts and an amount.
pub fn pick(rng: &mut SmallRng, accounts: u32) -> Move {
    let from = rng.random_range(0..accounts);
    let to = (from + rng.random_range(1..accounts)) % accounts;
    Move { from, to, amount: rng.random_range(1..=50) }
}

/// Writes group `n` of `writer` over the binary protocol.
pub async fn mset_tcp(c: &mut TcpClient, run: &str, writer: u32, n: u32) -> anyhow::Result<()> {
    let t = tag(writer, n);
    let pairs: Vec<(String, String)> =
        group_keys(run, writer, n).into_iter().map(|k| (k, t.clone())).collect();
    c.multi_put(&pairs).await
}

/// The MSET arguments of group `n` of `writer`.
pub fn mset_args(run: &str, writer: u32, n: u32) -> Vec<Vec<u8>> {
    let t = tag(writer, n);
    let mut args = vec![b"MSET".to_vec()];
    for k in group_keys(run, writer, n) {
        args.push(k.into_bytes());
        args.push(t.clone().into_bytes());
    }
    args
}

/// A transfer over the binary protocol: read both balances with their versions, then one TXN
/// guarded by those versions. `Ok(None)`: skipped (not enough money), nothing sent.
pub async fn transfer_tcp(
    c: &mut TcpClient,
    run: &str,
    writer: u32,
    n: u32,
    mv: Move,
) -> anyhow::Result<Option<Outcome>> {
    let (fk, tk) = (account_key(run, mv.from), account_key(run, mv.to));
    let (Some(f), Some(t)) = (c.entry(&fk).await?, c.entry(&tk).await?) else {
        bail!("an account is missing (read before a transfer)");
    };
    let (fb, tb) = (balance_of(Some(&f.value))?, balance_of(Some(&t.value))?);
    if fb < mv.amount {
        return Ok(None);
    }
    let version = |key: &str, v| Compare {
        key: Bytes::copy_from_slice(key.as_bytes()),
        op: CompareOp::Equal,
        target: CompareTarget::Version(v),
    };
    let success = vec![
        put(&fk, &(fb - mv.amount).to_string()),
        put(&tk, &(tb + mv.amount).to_string()),
        put(&marker_key(run, writer, n), &mv.marker()),
    ];
    let out = c.txn(vec![version(&fk, f.version), version(&tk, t.version)], success, Vec::new()).await?;
    if !out.succeeded {
        return Ok(Some(Outcome::Refused));
    }
    for r in &out.results {
        if !matches!(r, Ok(Reply::Put { applied: true, .. })) {
            bail!("a transfer's put answered {r:?}");
        }
    }
    Ok(Some(Outcome::Applied))
}

/// A transfer over RESP: WATCH both accounts, GET them, then MULTI, three SETs, EXEC (a null
/// array: refused). Any error leaves the outcome unknown; the caller drops the connection, which
/// ends its WATCH and MULTI.
pub async fn transfer_resp(
    c: &mut crate::client::RespClient,
    run: &str,
    writer: u32,
    n: u32,
    mv: Move,
) -> anyhow::Result<Option<Outcome>> {
    let (fk, tk) = (account_key(run, mv.from), account_key(run, mv.to));
    resp_ok(c.call(&[b"WATCH", fk.as_bytes(), tk.as_bytes()]).await?, "WATCH")?;
    let fb = balance_of(c.get(&fk).await?.as_deref())?;
    let tb = balance_of(c.get(&tk).await?.as_deref())?;
    if fb < mv.amount {
        resp_ok(c.call(&[b"UNWATCH"]).await?, "UNWATCH")?;
        return Ok(None);
    }
    resp_ok(c.call(&[b"MULTI"]).await?, "MULTI")?;
    let (fv, tv, marker) = ((fb - mv.amount).to_string(), (tb + mv.amount).to_string(), mv.marker());
    let mk = marker_key(run, writer, n);
    for (k, v) in [(&fk, &fv), (&tk, &tv), (&mk, &marker)] {
        match c.call(&[b"SET", k.as_bytes(), v.as_bytes()]).await? {
            RespReply::Simple(s) if s == "QUEUED" => {}
            other => bail!("SET inside MULTI answered {other:?}"),
        }
    }
    match c.call(&[b"EXEC"]).await? {
        RespReply::Array(None) => Ok(Some(Outcome::Refused)),
        RespReply::Array(Some(items))
            if items.len() == 3 && items.iter().all(|i| *i == RespReply::Simple("OK".into())) =>
        {
            Ok(Some(Outcome::Applied))
        }
        other => bail!("EXEC answered {other:?}"),
    }
}

/// What one atomic read of several keys must show; `None`: fine.
pub fn group_violation(values: &[Option<Bytes>], tag: &str) -> Option<String> {
    let present = values.iter().filter(|v| v.is_some()).count();
    if present == 0 {
        return None;
    }
    let wrong = values.iter().flatten().find(|v| v.as_ref() != tag.as_bytes());
    if present != values.len() || wrong.is_some() {
        return Some(format!(
            "group {tag}: {present} of {} keys present{}",
            values.len(),
            wrong.map(|w| format!(", one holds {:?}", String::from_utf8_lossy(w))).unwrap_or_default()
        ));
    }
    None
}

/// The sum over accounts read together, or what is wrong with them.
pub fn sum_of(values: &[Option<Bytes>]) -> anyhow::Result<i64> {
    values.iter().map(|v| balance_of(v.as_deref())).sum()
}

/// The groups of a state (`<run>:g:` keys), by (writer, n): each key index's value.
fn groups_in(run: &str, state: &HashMap<String, Bytes>) -> BTreeMap<(u32, u32), Vec<(u32, Bytes)>> {
    let pre = format!("{run}:g:");
    let mut out: BTreeMap<(u32, u32), Vec<(u32, Bytes)>> = BTreeMap::new();
    for (k, v) in state {
        let Some(rest) = k.strip_prefix(&pre) else { continue };
        let parts: Vec<&str> = rest.split(':').collect();
        let parsed = match parts.as_slice() {
            [w, n, i] => w.parse().ok().zip(n.parse().ok()).zip(i.parse().ok()),
            _ => None,
        };
        match parsed {
            Some(((w, n), i)) => out.entry((w, n)).or_default().push((i, v.clone())),
            // a key of no group's form: reported as a partial group of its own
            None => out.entry((u32::MAX, u32::MAX)).or_default().push((u32::MAX, v.clone())),
        }
    }
    out
}

/// The groups of `state` that are not whole (some keys missing, or a value other than the tag):
/// candidates only when the state was read key by key under load (a SCAN is not atomic).
pub fn partial_groups(run: &str, state: &HashMap<String, Bytes>) -> Vec<(u32, u32)> {
    groups_in(run, state)
        .into_iter()
        .filter(|((w, n), keys)| {
            let t = tag(*w, *n);
            keys.len() != GROUP_SIZE as usize
                || keys.iter().any(|(i, v)| *i >= GROUP_SIZE || v.as_ref() != t.as_bytes())
        })
        .map(|(g, _)| g)
        .collect()
}

/// What one node's final state shows about the group workload: every violation found.
pub fn check_final(
    run: &str,
    node: u64,
    state: &HashMap<String, Bytes>,
    accounts: u32,
    groups: &[GroupOp],
    transfers: &[TransferOp],
) -> Vec<String> {
    let (mut v, mut unsent, mut partial) = (Vec::new(), Vec::new(), Vec::new());
    let found = groups_in(run, state);
    let sent: HashMap<(u32, u32), Outcome> = groups.iter().map(|g| ((g.writer, g.n), g.outcome)).collect();
    for ((w, n), keys) in &found {
        let t = tag(*w, *n);
        if !sent.contains_key(&(*w, *n)) {
            unsent.push(format!("{t} ({} keys)", keys.len()));
        } else if keys.len() != GROUP_SIZE as usize
            || keys.iter().any(|(i, val)| *i >= GROUP_SIZE || val.as_ref() != t.as_bytes())
        {
            partial.push(format!("{t} ({} of {GROUP_SIZE} keys)", keys.len()));
        }
    }
    violation(&mut v, node, "groups never sent", &unsent);
    violation(&mut v, node, "groups are partial", &partial);
    let lost: Vec<String> = groups
        .iter()
        .filter(|g| g.outcome == Outcome::Applied && !found.contains_key(&(g.writer, g.n)))
        .map(|g| tag(g.writer, g.n))
        .collect();
    violation(&mut v, node, "acknowledged groups missing", &lost);

    // Accounts: all there, the sum conserved, and each balance the start plus the moves of the
    // markers present.
    let mut expect: Vec<i64> = vec![BALANCE; accounts as usize];
    let by_marker: HashMap<String, &TransferOp> =
        transfers.iter().map(|t| (marker_key(run, t.writer, t.n), t)).collect();
    let tpre = format!("{run}:t:");
    let mut bad_markers = Vec::new();
    for (k, val) in state.iter().filter(|(k, _)| k.starts_with(&tpre)) {
        match (by_marker.get(k), Move::parse(val)) {
            (Some(t), Some(mv)) if t.mv == mv && t.outcome != Outcome::Refused => {
                // `pick` draws both accounts below `accounts`
                if let Some(f) = expect.get_mut(mv.from as usize) {
                    *f -= mv.amount;
                }
                if let Some(x) = expect.get_mut(mv.to as usize) {
                    *x += mv.amount;
                }
            }
            (Some(t), _) if t.outcome == Outcome::Refused => {
                bad_markers.push(format!("{k} (refused: its versions had changed)"))
            }
            _ => bad_markers.push(format!("{k}={:?} (never sent)", String::from_utf8_lossy(val))),
        }
    }
    violation(&mut v, node, "transfer markers that must not be there", &bad_markers);
    let missing: Vec<String> = transfers
        .iter()
        .filter(|t| t.outcome == Outcome::Applied)
        .map(|t| marker_key(run, t.writer, t.n))
        .filter(|k| !state.contains_key(k))
        .collect();
    violation(&mut v, node, "acknowledged transfers missing their marker", &missing);
    let balances: Vec<Option<Bytes>> =
        account_keys(run, accounts).iter().map(|k| state.get(k).cloned()).collect();
    match sum_of(&balances) {
        Ok(sum) if sum != BALANCE * i64::from(accounts) => {
            v.push(format!("node {node}: the accounts sum to {sum}, not {}", BALANCE * i64::from(accounts)))
        }
        Ok(_) => {
            let got: Vec<i64> = balances.iter().filter_map(|b| balance_of(b.as_deref()).ok()).collect();
            if got != expect {
                v.push(format!(
                    "node {node}: balances {got:?} are not the start plus the markers' moves {expect:?} \
                     (a transfer applied in part)"
                ));
            }
        }
        Err(e) => v.push(format!("node {node}: accounts: {e:#}")),
    }
    v
}

/// Adds "node N: COUNT WHAT: a sample of them" to `v` when `found` is not empty.
fn violation(v: &mut Vec<String>, node: u64, what: &str, found: &[String]) {
    if !found.is_empty() {
        v.push(format!("node {node}: {} {what}: {}", found.len(), crate::run::sample(found)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(kv: &[(String, &str)]) -> HashMap<String, Bytes> {
        kv.iter().map(|(k, v)| (k.clone(), Bytes::from(v.to_string()))).collect()
    }

    fn whole(run: &str, w: u32, n: u32) -> Vec<(String, &'static str)> {
        let t: &'static str = Box::leak(tag(w, n).into_boxed_str());
        group_keys(run, w, n).into_iter().map(|k| (k, t)).collect()
    }

    fn accounts(run: &str, balances: &[&'static str]) -> Vec<(String, &'static str)> {
        balances.iter().enumerate().map(|(i, b)| (account_key(run, i as u32), *b)).collect()
    }

    #[test]
    fn markers_round_trip() {
        let m = Move { from: 3, to: 0, amount: 17 };
        assert_eq!(Move::parse(m.marker().as_bytes()), Some(m));
        assert_eq!(Move::parse(b"3>0"), None);
    }

    #[test]
    fn atomic_reads_see_whole_or_absent() {
        let t = Some(Bytes::from("1:2"));
        assert_eq!(group_violation(&[t.clone(), t.clone()], "1:2"), None);
        assert_eq!(group_violation(&[None, None], "1:2"), None);
        assert!(group_violation(&[t.clone(), None], "1:2").is_some());
        assert!(group_violation(&[t, Some(Bytes::from("1:3"))], "1:2").is_some());
    }

    #[test]
    fn the_final_check_catches_partial_lost_and_unbalanced_groups() {
        let run = "r";
        let groups = vec![
            GroupOp { writer: 0, n: 1, outcome: Outcome::Applied },
            GroupOp { writer: 0, n: 2, outcome: Outcome::Unknown },
        ];
        let mv = Move { from: 0, to: 1, amount: 10 };
        let transfers = vec![
            TransferOp { writer: 1, n: 1, mv, outcome: Outcome::Applied },
            TransferOp { writer: 1, n: 2, mv, outcome: Outcome::Refused },
        ];
        let mut good = whole(run, 0, 1);
        good.extend(accounts(run, &["990", "1010"]));
        good.push((marker_key(run, 1, 1), "0>1:10"));
        let check = |kv: &[(String, &str)]| check_final(run, 1, &state(kv), 2, &groups, &transfers);
        assert!(check(&good).is_empty(), "{:?}", check(&good));

        // the unknown group may be there whole, never in part
        let mut with_unknown = good.clone();
        with_unknown.extend(whole(run, 0, 2));
        assert!(check(&with_unknown).is_empty(), "{:?}", check(&with_unknown));
        let mut partial = good.clone();
        partial.extend(whole(run, 0, 2).into_iter().take(9));
        assert!(check(&partial).iter().any(|v| v.contains("partial")), "{:?}", check(&partial));

        let lost: Vec<_> = good.iter().filter(|(k, _)| !k.starts_with("r:g:")).cloned().collect();
        assert!(check(&lost).iter().any(|v| v.contains("acknowledged groups missing")));

        // a debit without its credit breaks the sum; a marker without its moves the balances
        let mut half = good.clone();
        half.retain(|(k, _)| k != &account_key(run, 1));
        half.push((account_key(run, 1), "1000"));
        assert!(check(&half).iter().any(|v| v.contains("sum to")), "{:?}", check(&half));
        let mut no_moves = good.clone();
        no_moves.retain(|(k, _)| !k.starts_with("r:a:"));
        no_moves.extend(accounts(run, &["1000", "1000"]));
        assert!(check(&no_moves).iter().any(|v| v.contains("markers' moves")), "{:?}", check(&no_moves));

        let mut refused = good.clone();
        refused.push((marker_key(run, 1, 2), "0>1:10"));
        assert!(check(&refused).iter().any(|v| v.contains("refused")), "{:?}", check(&refused));
        let no_marker: Vec<_> = good.iter().filter(|(k, _)| !k.starts_with("r:t:")).cloned().collect();
        assert!(
            check(&no_marker).iter().any(|v| v.contains("missing their marker")),
            "{:?}",
            check(&no_marker)
        );
    }
}
