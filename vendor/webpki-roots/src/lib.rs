//! No built-in root certificates (see this crate's Cargo.toml): the same
//! interface as webpki-roots 1.0, with an empty list, so that sqlx's rustls
//! TLS trusts only the CA given as `sslrootcert` in the coordinator's
//! `--store` URL.
#![no_std]

use pki_types::TrustAnchor;

/// The roots every TLS client built on this crate trusts without being told:
/// none.
pub const TLS_SERVER_ROOTS: &[TrustAnchor<'static>] = &[];
