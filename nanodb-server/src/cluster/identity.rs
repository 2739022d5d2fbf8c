//! Which cluster a data directory belongs to, and as which node: `<data-dir>/raft/identity`.
//!
//! # Why
//! A node started on another cluster's data directory (a copied volume, a wrong `--data-dir`, a
//! wrong `--cluster-peers`) carries a vote and a log that cluster's members never agreed to:
//! letting it talk to this cluster's members can depose their leader or, worse, hand it entries
//! from another history. etcd guards against this with a cluster id checked on every peer
//! message (`X-Etcd-Cluster-ID`); NanoDB does the same.
//!
//! # Rules
//! - **Minted once.** The node that initializes a cluster (the lowest id of `--cluster-peers`, or
//!   a node alone that makes itself a cluster of one) draws a random 128-bit cluster id and
//!   stores it before it proposes anything.
//! - **Carried by every Raft call** (the frame header, see `network`), so the receiver checks it
//!   before it decodes anything: a call from another cluster is refused and logged.
//! - **Adopted once.** A node with no cluster id yet (a founder waiting for the initializer's
//!   first call, a node added as a learner, a data directory written before cluster ids existed)
//!   takes the id of the first Raft call it accepts from a member and stores it.
//! - **Checked at start.** A node whose stored id differs from the id a reachable
//!   `--cluster-peers` member reports refuses to start; a node whose stored node id differs from
//!   `--node-id` refuses to start too (unless the id was assigned by the cluster: `REPLICAOF`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::types::NodeId;
use crate::persist::fsync_dir;

/// The file's name inside `<data-dir>/raft/`.
pub const FILE: &str = "identity";

/// What the file holds (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The cluster's id, 32 hex digits; absent until the node initializes or joins a cluster.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// This node's id in that cluster.
    pub node_id: NodeId,
    /// The id was assigned by the cluster (the node joined with `REPLICAOF`): it wins over
    /// `--node-id`.
    #[serde(default)]
    pub assigned: bool,
    /// The node is a cluster of one by itself (it served alone, or left with `REPLICAOF NO ONE`):
    /// a restart with an empty log initializes it alone again.
    #[serde(default)]
    pub alone: bool,
}

/// A node's identity, shared by the Raft port's both ends.
#[derive(Debug)]
pub struct Identity {
    path: PathBuf,
    stored: Mutex<Stored>,
}

/// A cluster id as it travels: 0 is "none yet".
pub type ClusterId = u128;

/// A new random cluster id (never 0).
pub fn mint() -> Result<ClusterId, String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut raw = [0u8; 16];
    SystemRandom::new().fill(&mut raw).map_err(|_| "the system random source failed".to_string())?;
    Ok(u128::from_be_bytes(raw).max(1))
}

/// A cluster id as 32 hex digits.
pub fn to_hex(id: ClusterId) -> String {
    format!("{id:032x}")
}

/// [`to_hex`] back (`None` for anything else, and for 0).
pub fn from_hex(s: &str) -> Option<ClusterId> {
    if s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

impl Identity {
    /// Reads `dir/identity`, or starts one for `node_id` (not written until something changes).
    /// A file that cannot be read or parsed refuses to start: guessing could join a node to the
    /// wrong cluster.
    pub fn open(dir: &Path, node_id: NodeId) -> Result<(Self, bool), String> {
        let path = dir.join(FILE);
        let (stored, existed) = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: unreadable cluster identity: {e}", path.display()))?;
                if let Some(id) = &stored.cluster_id
                    && from_hex(id).is_none()
                {
                    return Err(format!("{}: cluster_id {id:?} is not 32 hex digits", path.display()));
                }
                (stored, true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (Stored { node_id, ..Stored::default() }, false)
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok((Self { path, stored: Mutex::new(stored) }, existed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is stored now.
    pub fn get(&self) -> Stored {
        self.lock().clone()
    }

    /// The cluster id, 0 when none yet.
    pub fn cluster(&self) -> ClusterId {
        self.lock().cluster_id.as_deref().and_then(from_hex).unwrap_or(0)
    }

    /// Replaces what is stored and writes it (temp file, fsync, rename, directory fsync).
    pub fn set(&self, stored: Stored) -> std::io::Result<()> {
        let mut guard = self.lock();
        write(&self.path, &stored)?;
        *guard = stored;
        Ok(())
    }

    /// Takes `id` as the cluster's id if this node has none yet; `false` if it had one.
    pub fn adopt(&self, id: ClusterId) -> std::io::Result<bool> {
        let mut guard = self.lock();
        if guard.cluster_id.is_some() || id == 0 {
            return Ok(false);
        }
        let next = Stored { cluster_id: Some(to_hex(id)), ..guard.clone() };
        write(&self.path, &next)?;
        *guard = next;
        Ok(true)
    }
}

/// Whether a refusal of `(node, cluster id)` was not logged in the last 10 seconds (and notes
/// it now): a node of another cluster calls at its heartbeat rate, and one line says it all.
pub fn first_in_a_while(from: NodeId, cluster: ClusterId) -> bool {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<HashMap<(NodeId, ClusterId), Instant>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    if seen.len() > 1024 {
        seen.retain(|_, at| now.duration_since(*at) < Duration::from_secs(10));
        if seen.len() > 1024 {
            // Bounded whatever the callers send: forgetting only logs a line again.
            seen.clear();
        }
    }
    match seen.get(&(from, cluster)) {
        Some(at) if now.duration_since(*at) < Duration::from_secs(10) => false,
        _ => {
            seen.insert((from, cluster), now);
            true
        }
    }
}

fn write(path: &Path, stored: &Stored) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, &json)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_hex_and_zero_is_none() {
        let id = mint().expect("random");
        assert_ne!(id, 0);
        assert_eq!(from_hex(&to_hex(id)), Some(id));
        assert_eq!(from_hex(&to_hex(0)), None);
        assert_eq!(from_hex("xyz"), None);
    }

    #[test]
    fn an_identity_is_adopted_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ident, existed) = Identity::open(dir.path(), 3).expect("open");
        assert!(!existed);
        assert_eq!(ident.cluster(), 0);
        assert!(ident.adopt(42).expect("adopt"));
        assert!(!ident.adopt(43).expect("adopt"), "an id is adopted once");
        let (again, existed) = Identity::open(dir.path(), 9).expect("reopen");
        assert!(existed);
        assert_eq!((again.cluster(), again.get().node_id), (42, 3), "the stored node id, not the new flag");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        assert!(Identity::open(dir.path(), 3).is_err(), "a damaged identity refuses to start");
    }
}
