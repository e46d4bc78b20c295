//! weave's API: the `weave.v1` protobuf package, its generated tonic client and
//! server, and the domain types that both ends check the same way.
//!
//! - [`v1`]: generated messages and services (from `proto/weave/v1/weave.proto`).
//! - [`token`]: the one-string join token and admin credential, and the
//!   coordinator identity pin they carry.
//! - [`key`]: WireGuard public keys.
//! - [`proof`]: the join proof that a re-joining host holds the node's private key.
//! - [`cidr`]: subnet parsing that refuses host bits and says why.
//! - [`dns_name`]: names under the cluster domain, qualified and checked.
//! - [`local_api`]: the agent's local API (requests, answers, error kinds)
//!   and its socket framing, for the agent, weavectl and weave-cni.
//! - [`client`]: a TLS channel that trusts only the pinned coordinator, plus
//!   bearer credentials on every call.

pub mod cidr;
pub mod client;
pub mod command_line;
pub mod dns_name;
pub mod duration;
pub mod key;
pub mod local_api;
pub mod map;
#[cfg(feature = "observe")]
pub mod observe;
pub mod private_dir;
pub mod proof;
pub mod stop_signal;
pub mod token;

#[allow(unreachable_pub, clippy::all, rustdoc::invalid_html_tags)]
pub mod v1 {
    tonic::include_proto!("weave.v1");

    /// Encoded descriptors of every service, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weave_v1_descriptor");

    use std::fmt;

    impl fmt::Debug for JoinRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JoinRequest")
                .field("token", &"<redacted>")
                .field("name", &self.name)
                .field("public_key", &crate::key::fingerprint(&self.public_key))
                .field("endpoints", &self.endpoints)
                .field("proof", &!self.proof.is_empty())
                .field("map_by_watch", &self.map_by_watch)
                .finish()
        }
    }

    impl fmt::Debug for JoinResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("JoinResponse")
                .field("node", &self.node)
                .field("credential", &"<redacted>")
                .finish_non_exhaustive()
        }
    }

    impl fmt::Debug for RotateAdminCredentialResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RotateAdminCredentialResponse").field("credential", &"<redacted>").finish()
        }
    }

    impl fmt::Debug for CreateTokenResponse {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("CreateTokenResponse")
                .field("token", &self.token)
                .field("secret_token", &"<redacted>")
                .finish()
        }
    }
}
