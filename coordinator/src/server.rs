//! Start-up, in order: data dir, TLS identity, database, cluster settings,
//! listener, admin credential, first join token; then serve until shutdown.
use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use tokio::task::JoinHandle;
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};
use weave_proto::{
    token::{AdminCredential, JoinToken, hash_secret},
    v1::{
        admin_service_server::AdminServiceServer, dns_service_server::DnsServiceServer,
        ipam_service_server::IpamServiceServer, join_service_server::JoinServiceServer,
        map_service_server::MapServiceServer, node_service_server::NodeServiceServer,
        status_service_server::StatusServiceServer, subnet_service_server::SubnetServiceServer,
        token_service_server::TokenServiceServer,
    },
};

use crate::{
    admin_only::AdminOnly,
    api::{self, State},
    config::Settings,
    identity::{self, admin_credential_path, create_private_dir, load_or_create_tls, new_secret, write_secret_file},
    store::{Store, now},
};

/// A connection that has not finished its TLS handshake by then is closed:
/// otherwise each stalled one holds a descriptor and a task for ever.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub use crate::accept::AUTHENTICATE_WITHIN;
/// Concurrent RPCs (streams) on one HTTP/2 connection. An agent needs a
/// watch and a few calls; weavectl one at a time; a script may start many
/// at once on a new connection (fewer were refused, REFUSED_STREAM, before
/// the client had the server's settings).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// The largest request message any service decodes. tonic's default is 4
/// MiB, reserved as soon as a message's 5-byte header declares it and held
/// until the body is complete, before any handler or credential check: a
/// client that never joined could hold 256 MiB per connection (64 streams)
/// by declaring 4 MiB and sending all but the last byte; at 8 KiB that is
/// 512 KiB per connection (some 2.1 MB with HTTP/2's and tonic's own
/// buffers, as a review measured), and `--max-unauthenticated-connections`
/// bounds how many such connections are held. Every request weave defines is under 2 KiB (16
/// endpoints, 253-byte names, 256-byte descriptions); a larger one is
/// refused with OUT_OF_RANGE from its header.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// How long a stop waits for open calls and streams to end.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// `server` decoding at most [`MAX_REQUEST_BYTES`] per request message.
macro_rules! limited {
    ($server:expr) => {
        $server.max_decoding_message_size(MAX_REQUEST_BYTES)
    };
}

/// A coordinator that is serving.
pub struct Running {
    /// Where it listens (the real port when started on port 0).
    pub local_addr: SocketAddr,
    /// host:port in its tokens.
    pub advertise: String,
    pub admin: AdminCredential,
    /// The join token made at first start, with its limits (None on later starts).
    pub first_token: Option<(JoinToken, weave_proto::v1::Token)>,
    pub store: Store,
    /// Where /metrics, /healthz and /readyz are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// What tokens carry when `--advertise` is not given: the listen address, or
/// for an any address the host's first IPv4 address that is not loopback,
/// or (listening on `[::]`, a host without IPv4) its first IPv6 one that is
/// neither loopback nor link-local.
fn advertise_for(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        let ips: Vec<IpAddr> = if_addrs::get_if_addrs().unwrap_or_default().into_iter().map(|i| i.ip()).collect();
        let usable = |ip: &&IpAddr| match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            IpAddr::V6(v6) => listen.is_ipv6() && !v6.is_loopback() && !v6.is_unicast_link_local(),
        };
        let v4 = ips.iter().filter(|ip| ip.is_ipv4()).find(usable);
        v4.or_else(|| ips.iter().find(usable)).copied().unwrap_or_else(|| {
            tracing::warn!(
                "--listen {listen}: this host has no address other hosts could dial; tokens carry 127.0.0.1, \
                 which joins only this host: give --advertise"
            );
            IpAddr::from([127, 0, 0, 1])
        })
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port()).to_string()
}

/// Takes `<data_dir>/coordinator.lock` (an exclusive `flock`, released when
/// the process ends however it ends): two coordinators on one data dir
/// would share its TLS identity and overwrite each other's
/// `admin.credential` (found by a probe, 2026-12-02).
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("coordinator.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        nix::errno::Errno::EWOULDBLOCK => anyhow::anyhow!(
            "another coordinator serves --data-dir {} (it holds {}): stop it, or give this one a --data-dir of its own",
            dir.display(),
            path.display()
        ),
        e => anyhow::anyhow!("{}: {e}", path.display()),
    })
}

/// A TLS identity whose database holds no cluster (or is not there).
fn no_cluster(settings: &Settings) -> anyhow::Error {
    anyhow::anyhow!(
        "{} has a TLS identity (tls/) but the database ({}) holds no cluster: it was lost or emptied, or --store names another one. Restore it from a backup (or point --store at the cluster's); to make a new cluster here instead, move tls/ and admin.credential out of {} first",
        settings.data_dir.display(),
        settings.store,
        settings.data_dir.display()
    )
}

/// Starts a coordinator with `settings`; it serves until `shutdown` resolves.
pub async fn start(settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Running> {
    if let Some(warning) =
        weave_proto::private_dir::secure(&settings.data_dir).map_err(|e| anyhow::anyhow!("--data-dir: {e}"))?
    {
        tracing::warn!("--data-dir: {warning}");
    }
    create_private_dir(&settings.data_dir)?;
    let lock = lock_data_dir(&settings.data_dir)?;
    // Bound before anything is created: a first start that cannot listen
    // (a mistyped --listen) must leave no database behind, or the next start
    // would keep that one's --range and print no first join token.
    // `[::]` (the Kubernetes manifest's) falls back to IPv4 on a host without IPv6.
    let listener = weave_proto::observe::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: {e}", settings.listen))?;
    // Bound now too, so a taken port fails the start rather than a later scrape.
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => {
            Some(weave_proto::observe::bind(addr).await.map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?)
        }
        None => None,
    };
    // A TLS identity without its SQLite file is refused before the file is
    // made: the refused start left a new, empty database and its -wal, which
    // SQLite read over the backup copied in next, refusing that too (found
    // by a review, 2026-12-06). An emptied file is refused below.
    if let crate::store::Location::Sqlite(path) = &settings.store
        && crate::identity::tls_exists(&settings.data_dir)
        && !settings.new_identity
        && !path.exists()
    {
        return Err(no_cluster(&settings));
    }
    // A damaged SQLite file says what to do (it gave SQLite's words alone;
    // found by a review, 2026-12-06).
    let store = Store::connect(&settings.store)
        .await
        .map_err(|e| {
            let said = e.to_string();
            match &settings.store {
                crate::store::Location::Sqlite(path)
                    if said.contains("malformed") || said.contains("not a database") =>
                {
                    anyhow::anyhow!(
                        "{}: {said}: the file is damaged; restore it from a backup (with its -wal file if the \
                         backup has one)",
                        path.display()
                    )
                }
                _ => e.into(),
            }
        })?
        .with_node_quota(settings.node_quota)
        .with_node_subnet_quota(settings.node_subnet_quota)
        .with_node_dns_quota(settings.node_dns_quota)
        .with_dns_hold(settings.dns_name_hold.map(|d| d.as_secs()))
        .with_address_hold(settings.address_hold.map(|d| d.as_secs()));
    // The admin credential's file, read before anything is made (a first
    // start it refuses leaves no cluster behind).
    let admin_path = admin_credential_path(&settings.data_dir);
    // A file that is there but cannot be read or parsed is refused before
    // anything changes: it was rotated away in the database (a directory in
    // its place failed the start only after that), or silently replaced
    // (found by a review, 2026-12-06). Only a missing file makes a new one.
    let unusable = |why: String| {
        anyhow::anyhow!(
            "{}: {why}: restore it (from a backup, or another coordinator of this cluster), or delete it to \
             make a new admin credential (the old one then stops working)",
            admin_path.display()
        )
    };
    let existing_secret = match std::fs::read_to_string(&admin_path) {
        Ok(text) => {
            Some(AdminCredential::parse(&text).map_err(|e| unusable(format!("not an admin credential ({e})")))?.secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(unusable(e.to_string())),
    };
    // Every token and credential pins the key that made the cluster: a new
    // one made because tls/ went missing (a lost file, a second coordinator
    // of a shared database not given the first one's) locked every agent
    // out, with nothing but INFO said (found by a review, 2026-12-04).
    // What --new-identity replaces: the pin recorded before this start made
    // a key (another start doing the same meanwhile wins, this one is refused).
    let replaced = store.recorded_pin().await?;
    let (had_tls, had_cluster) = (crate::identity::tls_exists(&settings.data_dir), store.cluster().await?.is_some());
    // Its mirror: an identity without a cluster (coordinator.db lost or
    // emptied, a --store pointing elsewhere) made a new, empty cluster under
    // the old pin, and every agent was told to join again with a token,
    // into it, where addresses in use are given again (found by a review,
    // 2026-12-06).
    if had_tls && !had_cluster && !settings.new_identity {
        // Closed whole: its -wal folded in, none left beside the file for
        // SQLite to read over a backup copied in.
        store.close().await;
        return Err(no_cluster(&settings));
    }
    if !had_tls && !settings.new_identity && had_cluster {
        anyhow::bail!(
            "{} has no TLS identity (tls/coordinator.key) but the database holds a cluster, whose agents and \
             tokens pin the identity it was made with: restore tls/ (for one more coordinator of a shared \
             database: copy the first one's tls/ and admin.credential), or start with --new-identity to make a \
             new one for the cluster (every agent must then join again, with a new token; with several \
             coordinators: stop them all, start one with it, then copy its tls/ and admin.credential to the \
             others and start them)",
            settings.data_dir.display()
        );
    }
    let (tls, tls_created) = load_or_create_tls(&settings.data_dir)?;
    // One identity per cluster: a key that is not the one recorded is not
    // served (two coordinators started at once on an empty database each
    // made one; found by a review, 2026-12-05).
    let pin = tls.pin.to_string();
    let (mut cluster, first_start) = match store.init_cluster_pinned(&settings.cluster, Some(&pin)).await {
        Ok(made) => made,
        Err(e) => {
            if tls_created && !had_cluster {
                // Made by this start for a cluster not made: not left to
                // stand for a cluster the next start would not find.
                let _ = std::fs::remove_dir_all(settings.data_dir.join("tls"));
            }
            return Err(e.into());
        }
    };
    let recorded =
        store.cluster_pin(&pin, replaced.as_deref().filter(|_| settings.new_identity && tls_created)).await?;
    if recorded != pin {
        if tls_created {
            // Made by this start: gone again, so a restart does not serve it.
            let _ = std::fs::remove_dir_all(settings.data_dir.join("tls"));
        }
        anyhow::bail!(
            "this database's cluster is served under another TLS identity ({recorded}; {}'s tls/ is {pin}): \
             another coordinator made it (started at the same time?), or tls/ is another cluster's. Copy that \
             coordinator's tls/ and admin.credential into {} and start again",
            settings.data_dir.display(),
            settings.data_dir.display()
        );
    }
    match (tls_created, first_start) {
        (true, true) => tracing::info!(pin = %tls.pin, "created the coordinator's TLS identity"),
        (true, false) => tracing::warn!(
            pin = %tls.pin,
            "--new-identity: created a new TLS identity; every agent must join again, with a new token"
        ),
        _ => {}
    }
    if !first_start && (cluster.range != settings.cluster.range || cluster.node_range != settings.cluster.node_range) {
        tracing::warn!(
            range = %cluster.range, node_range = %cluster.node_range,
            "the database was created with other --range/--node-range; keeping the recorded ones"
        );
    }
    match (first_start, cluster.segment_mtu, settings.cluster.segment_mtu) {
        (true, mtu, _) => tracing::info!(segment_mtu = mtu, "every segment's MTU, on every host"),
        (false, 0, Some(mtu)) if store.record_segment_mtu(mtu).await? => {
            cluster.segment_mtu = mtu;
            tracing::warn!(
                segment_mtu = mtu,
                "recorded the segment MTU (agents take it when they restart; workloads attached before keep theirs \
                 until attached again)"
            )
        }
        (false, 0, _) => tracing::warn!(
            "this cluster has no segment MTU (created before there was one): each host derives its own from its \
             underlay, and hosts with different underlay MTUs lose frames between them; give --mtu once to set one"
        ),
        (false, recorded, Some(mtu)) if recorded != mtu => tracing::warn!(
            segment_mtu = recorded,
            "the database was created with another --mtu; keeping the recorded one"
        ),
        _ => {}
    }
    if !first_start && cluster.dns_domain != settings.cluster.dns_domain {
        tracing::warn!(
            dns_domain = %cluster.dns_domain,
            "the database was created with another --dns-domain; keeping the recorded one"
        );
    }

    let local_addr = listener.local_addr()?;
    let advertise = settings.advertise.clone().unwrap_or_else(|| advertise_for(local_addr));

    // The admin credential: keep its secret across restarts; refresh address and pin.
    let secret = existing_secret.unwrap_or_else(new_secret);
    // The file's credential is the only valid one: deleting the file and
    // restarting is an offline rotation (`weavectl admin rotate` is the online
    // one). Unless it was rotated away: then it stays revoked.
    let current = store.replace_admin_credential(&hash_secret(&secret)).await?;
    let admin = AdminCredential { coordinator: advertise.clone(), pin: tls.pin, secret };
    if current {
        write_secret_file(&admin_path, &format!("{admin}\n"))?;
    } else {
        tracing::warn!(
            file = %admin_path.display(),
            "this file's admin credential was rotated away (through another coordinator of this database?) and \
             stays revoked; copy the current admin.credential here, or delete this file and restart to rotate again"
        );
    }

    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let stopping_sweep = stopping.clone();
    let connections = crate::accept::Connections::default();
    let (presence, recording) = api::presence::Presence::new(store.clone());
    tokio::spawn(recording);
    let state = Arc::new(State {
        store: store.clone(),
        cluster,
        advertise: advertise.clone(),
        underlay: api::own_addresses(local_addr, &advertise),
        store_hosts: settings.store.network_addresses(),
        node_subnets: settings.node_subnets.clone(),
        pin: tls.pin,
        token_ttl: settings.token_ttl,
        forget_after_floor: settings.forget_after_floor,
        challenger: Default::default(),
        data_dir: settings.data_dir.clone(),
        credentials_epoch: tokio::sync::watch::channel(0).0,
        rotation: Default::default(),
        started_at: now(),
        watchers: AtomicU32::new(0),
        watches_by_credential: Default::default(),
        watches_by_node: Default::default(),
        stopping,
        pacer: api::pace::Pacer::new(settings.node_rate),
        failures: crate::api::pace::Failures::knowing(store.valid_credential_hashes().await?),
        connections: connections.clone(),
        presence,
    });
    tokio::spawn(api::presence::forget_unseen(state.clone()));
    let first_token = if first_start && !settings.no_first_token {
        let ttl = settings.first_token_ttl.map(|d| d.as_secs());
        let uses = Some(settings.first_token_uses).filter(|u| *u > 0);
        let (token, join) = api::Tokens::create(&state, ttl, uses, "created at first start".into(), 0).await?;
        tracing::info!(
            token = %token.id, expires_at = token.expires_at, uses = ?uses,
            "first-start join token created (see --first-token-ttl and --first-token-uses)"
        );
        Some((join, token))
    } else {
        None
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    // The server as a whole ("") and each weave service by name, as probes
    // that name one ask (`grpc_health_probe -service`, a Kubernetes gRPC
    // probe's `service:`); NOT_SERVING once a stop begins.
    let served = [
        "",
        <JoinServiceServer<api::Join> as tonic::server::NamedService>::NAME,
        <NodeServiceServer<api::Nodes> as tonic::server::NamedService>::NAME,
        <MapServiceServer<api::Map> as tonic::server::NamedService>::NAME,
        <SubnetServiceServer<api::Subnets> as tonic::server::NamedService>::NAME,
        <IpamServiceServer<api::Ipam> as tonic::server::NamedService>::NAME,
        <DnsServiceServer<api::Dns> as tonic::server::NamedService>::NAME,
        <TokenServiceServer<api::Tokens> as tonic::server::NamedService>::NAME,
        <AdminServiceServer<api::Admin> as tonic::server::NamedService>::NAME,
        <StatusServiceServer<api::StatusApi> as tonic::server::NamedService>::NAME,
    ];
    for name in served {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weave_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // v1alpha too: Python's grpcio-reflection, Postman and older grpcurl speak only that.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(weave_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            tracing::info!(listen = %addr, "serving /metrics, /healthz and /readyz");
            crate::metrics::spawn(listener, state.clone(), state.stopping.clone());
            Some(addr)
        }
        None => None,
    };

    let tls_config =
        ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)).timeout(TLS_HANDSHAKE_TIMEOUT);
    let router = Server::builder()
        .tls_config(tls_config)?
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // A peer that vanished (host powered off, NAT entry gone) gives its
        // descriptor back within a minute instead of at TCP's hours.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(crate::metrics::RpcMetricsLayer)
        // Outside the deadline: a read waiting for room is not the store
        // failing to answer.
        .layer(crate::unread::UnreadLayer::default())
        .layer(crate::deadline::DeadlineLayer(settings.rpc_deadline))
        .add_service(crate::health_watches::HealthWatches::new(limited!(health_service), stopping_sweep.clone()))
        .add_service(AdminOnly::new(limited!(reflection), state.clone()))
        .add_service(AdminOnly::new(limited!(reflection_alpha), state.clone()))
        .add_service(limited!(JoinServiceServer::new(api::Join(state.clone()))))
        .add_service(limited!(NodeServiceServer::new(api::Nodes(state.clone()))))
        .add_service(limited!(MapServiceServer::new(api::Map(state.clone()))))
        .add_service(limited!(SubnetServiceServer::new(api::Subnets(state.clone()))))
        .add_service(limited!(IpamServiceServer::new(api::Ipam(state.clone()))))
        .add_service(limited!(DnsServiceServer::new(api::Dns(state.clone()))))
        .add_service(limited!(TokenServiceServer::new(api::Tokens(state.clone()))))
        .add_service(limited!(AdminServiceServer::new(api::Admin(state.clone()))))
        .add_service(limited!(StatusServiceServer::new(api::StatusApi(state.clone()))));
    let presence = state.presence.clone();
    // No Nagle: a join answer (with the whole map) would otherwise wait for a delayed ACK.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(30)));
    let limits = crate::accept::Limits {
        authenticate_within: settings.authenticate_within,
        ..crate::accept::Limits::for_process(
            settings.max_connections_per_source,
            settings.max_connections,
            settings.max_unauthenticated_connections,
        )
    };
    tracing::debug!(
        per_source = limits.per_source,
        total = limits.total,
        unproven = limits.unproven,
        "connection limits"
    );
    let mut stopped = stopping_sweep.clone();
    let incoming = crate::accept::limited(crate::accept::backing_off(incoming), limits, connections, stopping_sweep);
    // Tell the watch streams first, then let tonic drain the connections.
    let shutdown = async move {
        shutdown.await;
        for name in served {
            health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
        }
        let _ = stop_tx.send(true);
    };
    // The data dir stays this coordinator's until it has stopped serving.
    let closing = store.clone();
    let task = tokio::spawn(async move {
        let _lock = lock;
        // The drain is bounded: a client that does not read its answer (a
        // zero window) or never finishes its request held a stopped
        // coordinator, its lock and its unfolded log, for as long as it
        // liked (found by a review, 2026-12-07).
        let drained = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(DRAIN_WITHIN).await;
        };
        let served = tokio::select! {
            served = router.serve_with_incoming_shutdown(incoming, shutdown) => served,
            () = drained => {
                tracing::warn!(within = ?DRAIN_WITHIN, "connections still open after the stop began: closed");
                Ok(())
            }
        };
        // No watch of this coordinator is held now: recorded before the store closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), presence.stop()).await;
        closing.close().await;
        served
    });
    tracing::info!(listen = %local_addr, %advertise, pin = %tls.pin, data_dir = %settings.data_dir.display(), store = %settings.store, "coordinator serving");
    Ok(Running { local_addr, advertise, admin, first_token, store, metrics_addr, task })
}

pub use identity::TlsIdentity;
