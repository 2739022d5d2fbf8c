//! The crash harness's parts: the linearizability checker ([`linearizable`]), the clients that
//! record histories, the processes it kills and restarts (or the containers it partitions), and the
//! final checks.

pub mod client;
pub mod docker;
pub mod linearizable;
pub mod nodes;
pub mod partition;
pub mod run;
