//! The crash harness's parts: the linearizability checker ([`linearizable`]), the clients that
//! record histories, the multi-key group workload and its checks ([`groups`]), the processes it
//! kills and restarts, and the final checks.

pub mod client;
pub mod groups;
pub mod linearizable;
pub mod nodes;
pub mod run;
// Nodes in containers and the network partitions made on them (issue #17).
pub mod docker;
pub mod partition;
