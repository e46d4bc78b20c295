//! `/metrics`, `/healthz` and `/readyz` on the coordinator's own plain-HTTP
//! port: the values follow the map, every RPC is timed by method and code, and
//! the gRPC port itself serves none of it.
mod common;

use common::TestCoordinator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weave_proto::v1::{AddSubnetRequest, AllocateRequest, ListNodesRequest};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The value of the series `name` (exact text before the value).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_map_and_time_every_rpc() {
    let c = TestCoordinator::start_in(tempfile::tempdir().unwrap(), |a| a.metrics_listen = "127.0.0.1:0".into()).await;
    let addr = c.running.metrics_addr.expect("metrics served");
    assert_ne!(addr.port(), c.running.local_addr.port(), "never on the gRPC port");

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);

    c.join("m1", 1).await;
    c.join("m2", 2).await;
    let mut admin = c.admin().await;
    admin
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "10.2.3.0/24".into(), name: String::new(), egress: false })
        .await
        .unwrap();
    let (_, mut node) = c.join("m3", 3).await;
    // Outside --node-subnets: a node is refused (counted as PERMISSION_DENIED below).
    let denied = node
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "100.64.0.0/24".into(), name: String::new(), egress: false })
        .await;
    assert_eq!(denied.unwrap_err().code(), tonic::Code::PermissionDenied);
    admin.nodes.list_nodes(ListNodesRequest {}).await.unwrap();

    // An IPv6 subnet counts as a subnet, not in weave_max_ips (a /64 would
    // be 1.8e19 of it and every used/max ratio zero).
    admin
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "fd01::/64".into(), name: String::new(), egress: false })
        .await
        .unwrap();

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(value(&body, "weave_nodes"), Some(3.0), "{body}");
    assert_eq!(value(&body, "weave_subnets"), Some(3.0), "{body}");
    // The default /16 (65,534 usable) and the /24 (254).
    assert_eq!(value(&body, "weave_max_ips"), Some(65_534.0 + 254.0), "{body}");
    // Counters of events that did not happen are there, at 0.
    for counter in ["weave_connections_refused_total", "weave_rpc_deadline_exceeded_total", "weave_rpc_paced_total"] {
        assert_eq!(value(&body, counter), Some(0.0), "{counter}: {body}");
    }
    assert_eq!(value(&body, "weave_ips{state=\"used\"}"), Some(0.0), "{body}");
    assert_eq!(value(&body, "weave_subnet_fullest_ratio"), Some(0.0), "{body}");
    // Used counts what max counts (IPv4), and the fullest subnet shows: a
    // /30 full beside the rest empty, and an IPv6 address that counts in neither.
    admin
        .subnets
        .add_subnet(AddSubnetRequest { cidr: "10.2.9.0/30".into(), name: "tiny".into(), egress: false })
        .await
        .unwrap();
    for (container, subnet) in [("t1", "tiny"), ("t2", "tiny"), ("v6", "fd01::/64")] {
        let r = AllocateRequest { container: container.into(), subnet: subnet.into(), ..Default::default() };
        node.ipam.allocate(r).await.unwrap();
    }
    let (_, body) = get(addr, "/metrics").await;
    assert_eq!(value(&body, "weave_ips{state=\"used\"}"), Some(2.0), "{body}");
    assert_eq!(value(&body, "weave_max_ips"), Some(65_534.0 + 254.0 + 2.0), "{body}");
    assert_eq!(value(&body, "weave_subnet_fullest_ratio"), Some(1.0), "{body}");
    assert!(value(&body, "weave_joins_total{result=\"new\"}").is_some_and(|v| v >= 3.0), "{body}");
    // No re-join happened: its series is there all the same, from 0.
    assert!(value(&body, "weave_joins_total{result=\"rejoin\"}").is_some(), "{body}");
    assert!(
        value(
            &body,
            "weave_rpc_duration_seconds_count{method=\"/weave.v1.SubnetService/AddSubnet\",code=\"PERMISSION_DENIED\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(
        value(&body, "weave_rpc_duration_seconds_count{method=\"/weave.v1.NodeService/ListNodes\",code=\"OK\"}")
            .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(value(&body, "weave_map_revision").is_some_and(|v| v >= 4.0), "{body}");
    assert_eq!(get(addr, "/nothing").await.0, 404);
}
