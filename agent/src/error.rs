//! What can go wrong in the agent, one variant per kind of failure.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad join token: {0}")]
    Token(String),
    #[error("{0}")]
    Connect(String),
    #[error("the coordinator refused to join this host: {0}")]
    JoinRefused(String),
    /// A refusal that trying again does not change (a token unknown,
    /// expired, revoked or used up; a name taken): exit 2, which the
    /// systemd unit does not restart.
    #[error("the coordinator refused to join this host: {0}")]
    JoinDenied(String),
    #[error("saved state: {0}")]
    State(String),
    /// The running agent refused a request (`agent allocate`, `agent
    /// status`): its sentence, and its kind for the exit code.
    #[error("{1}")]
    Refused(weave_proto::local_api::ErrorKind, String),
    /// A flag's value is wrong (found before anything was done).
    #[error("{0}")]
    Usage(String),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    #[error("netlink: {0}")]
    Netlink(String),
    /// `nft` refused or failed to apply a ruleset.
    #[error("nft: {0}")]
    Nft(String),
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("data plane: {0}")]
    Dataplane(String),
    #[error("dns: {0}")]
    Dns(String),
    #[error("the network map is inconsistent: {0}")]
    Map(String),
    /// The coordinator refused this node's credential: it was removed from
    /// the cluster, or re-joined elsewhere. The agent stops for good.
    #[error(
        "this node is no longer a member of the cluster (the coordinator said: {0}); its tunnels and \
         interfaces are removed. To join again: `agent reset`, then `agent join` with a new token"
    )]
    Removed(String),
    /// The coordinator forgot this node: it held no map watch for longer
    /// than its token's `--forget-after`. Not an admin's decision, so
    /// nothing keeps it out: started again with its token, it joins as a
    /// new node.
    #[error(
        "this node is no longer a member of the cluster (the coordinator said: {0}); its tunnels and \
         interfaces are removed. Started again with its token (`agent join --token-file <file>`, as a \
         service manager or Kubernetes restarts it), it joins again as a new node"
    )]
    Forgotten(String),
    /// `agent run` on a host whose node the coordinator forgot (above), not
    /// joined since: it has no token to join with.
    #[error(
        "the coordinator forgot this node earlier (it said: {0}); `agent run` has no token to join with: \
         `agent join --token-file <file>` joins it again as a new node"
    )]
    ForgottenEarlier(String),
    /// `agent join` on a host whose membership ended earlier.
    #[error(
        "this host was removed from the cluster earlier (the coordinator said: {0}); it does not join again \
         on its own: `agent reset` first, then `agent join` with a new token"
    )]
    RemovedEarlier(String),
}
