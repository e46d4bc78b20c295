//! Side effects on this host, each kind in one module: its own underlay
//! addresses and their changes ([`addresses`]), interfaces, routes
//! and neighbours ([`netlink`]), the nftables table ([`firewall`]), entering
//! a container's namespace ([`netns`]), and the data directory ([`state`]:
//! identity and map; [`registry`]: which container is which; [`docker`]: the Docker plugin's networks and endpoints). Imports only
//! [`crate::plan`] and [`crate::error`].
pub mod addresses;
pub mod docker;
pub mod firewall;
pub mod netlink;
pub mod netns;
pub mod registry;
pub mod routes;
pub mod state;
