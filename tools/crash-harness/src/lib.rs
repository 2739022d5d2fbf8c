//! The crash harness's parts: the linearizability checker ([`linearizable`]), the clients that
//! record histories, the processes it kills and restarts, and the final checks.

pub mod linearizable;
