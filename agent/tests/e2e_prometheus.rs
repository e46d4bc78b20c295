//! A real Prometheus (Debian's) in the test bed scrapes the coordinator and
//! two agents: every target is up, the gauges hold what the test built (nodes,
//! peers, local IPs, established connections), `promtool check metrics`
//! accepts every endpoint, `/readyz` tells a ready agent from one whose
//! coordinator is gone, and the alert rules of deploy/prometheus load, stay
//! silent on the healthy cluster and fire (pending) for a dead agent, an
//! unreachable peer and a lost coordinator.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Bed, Killed, in_netns, wait_for};

/// GET `path` from `addr` inside namespace `ns`: (status, body).
fn get(ns: &str, addr: &str, path: &str) -> (u16, String) {
    let (addr, path) = (addr.to_string(), path.to_string());
    in_netns(ns, move || {
        let Ok(mut c) = TcpStream::connect(&addr) else { return (0, String::new()) };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        (status, if chunked { dechunk(body) } else { body.to_string() })
    })
    .join()
    .unwrap()
}

/// The body of a chunked HTTP/1.1 response (Prometheus' larger answers).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if n == 0 || after.len() < n {
            break;
        }
        body.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    body
}

/// One instant query; the (labels, value) of each result.
fn query(ns: &str, q: &str) -> Vec<(serde_json::Value, f64)> {
    let encoded: String = q
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let (status, body) = get(ns, "127.0.0.1:9090", &format!("/api/v1/query?query={encoded}"));
    if status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| (r["metric"].clone(), r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)))
                .collect()
        })
        .unwrap_or_default()
}

/// deploy/prometheus, where the alert rules and their unit tests ship.
fn rules_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The shipped alert rules pass `promtool check rules` and their own unit
/// tests (each alert fires on trouble and stays silent on a healthy
/// cluster's series).
#[test]
fn the_shipped_alert_rules_pass_their_unit_tests() {
    for args in [&["check", "rules", "weave-alerts.yml"][..], &["test", "rules", "weave-alerts.test.yml"]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(rules_dir())
            .output()
            .expect("run promtool (Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn promtool_accepts(body: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn prometheus_scrapes_the_coordinator_and_agents() {
    let mut bed = Bed::new();
    bed.agent_args = vec!["--metrics-listen".into(), "0.0.0.0:6782".into()];
    for _ in 0..2 {
        bed.add_host();
    }
    bed.wait_peers(0, 1);
    bed.wait_peers(1, 1);
    let w0 = bed.add_workload_via_agent(0, "net:default");
    let w1 = bed.add_workload_via_agent(1, "net:default");
    bed.wait_ping(w0, w1, Duration::from_secs(20));

    // Prometheus in the coordinator's namespace: the coordinator on its
    // loopback default (127.0.0.1:6781), the agents across the underlay.
    let (h1, h2) = (bed.hosts[0].ip, bed.hosts[1].ip);
    let config = bed.path("prometheus.yml");
    let rules = rules_dir().join("weave-alerts.yml").display().to_string();
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }}\n\
             rule_files: ['{rules}']\nscrape_configs:\n  \
             - job_name: coordinator\n    static_configs: [{{ targets: ['127.0.0.1:6781'] }}]\n  \
             - job_name: agent\n    static_configs: [{{ targets: ['{h1}:6782', '{h2}:6782'] }}]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(bed.path("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("ip")
            .args(["netns", "exec", &bed.coordinator_ns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", bed.path("tsdb").display()))
            .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian package prometheus)"),
    );
    let ns = bed.coordinator_ns.clone();

    let up = wait_for("Prometheus to scrape all three targets", Duration::from_secs(60), || {
        let up = query(&ns, "up");
        (up.len() == 3 && up.iter().all(|(_, v)| *v == 1.0)).then_some(up)
    });
    assert_eq!(up.iter().filter(|(m, _)| m["job"] == "agent").count(), 2);

    let value_is = |q: &str, want: f64, n: usize| {
        wait_for(&format!("{q} = {want} on {n} targets"), Duration::from_secs(30), || {
            let r = query(&ns, q);
            (r.len() == n && r.iter().all(|(_, v)| *v == want)).then_some(())
        })
    };
    value_is("weave_nodes", 2.0, 1);
    value_is("weave_ips{job=\"coordinator\",state=\"used\"}", 2.0, 1);
    value_is("weave_peers", 1.0, 2);
    value_is("weave_ips{job=\"agent\",state=\"local\"}", 1.0, 2);
    value_is("weave_connections{state=\"established\"}", 1.0, 2);
    value_is("weave_coordinator_connected", 1.0, 2);
    value_is("weave_watchers", 2.0, 1);
    value_is("weave_watching_nodes", 2.0, 1);
    value_is("weave_connected_nodes", 2.0, 1);
    wait_for("traffic counted in both directions", Duration::from_secs(30), || {
        let r = query(&ns, "weave_traffic_bytes_total");
        (r.len() == 4 && r.iter().all(|(_, v)| *v > 0.0)).then_some(())
    });
    // Timed per kind of pass; every agent made a full pass at start.
    wait_for("reconcile passes timed", Duration::from_secs(30), || {
        let r = query(&ns, "weave_reconcile_duration_seconds_count");
        let kinds = r.iter().all(|(m, _)| matches!(m["pass"].as_str(), Some("full" | "incremental")));
        let full: Vec<_> = r.iter().filter(|(m, _)| m["pass"] == "full").collect();
        let agents: std::collections::BTreeSet<_> = full.iter().map(|(m, _)| m["instance"].to_string()).collect();
        (kinds && full.len() == 2 && agents.len() == 2 && full.iter().all(|(_, v)| *v >= 1.0)).then_some(())
    });

    // The exposition of every endpoint passes Prometheus' own linter.
    for (ns, addr) in [
        (bed.coordinator_ns.clone(), "127.0.0.1:6781".to_string()),
        (bed.hosts[0].ns.clone(), format!("{h1}:6782")),
        (bed.hosts[1].ns.clone(), format!("{h2}:6782")),
    ] {
        let (status, body) = get(&ns, &addr, "/metrics");
        assert_eq!(status, 200, "{addr}");
        promtool_accepts(&body).unwrap_or_else(|e| panic!("promtool on {addr}: {e}\n{body}"));
        assert_eq!(get(&ns, &addr, "/healthz").0, 200, "{addr}");
        assert_eq!(get(&ns, &addr, "/readyz").0, 200, "{addr}");
    }
    // Nothing of it on the gRPC port, which speaks only TLS.
    assert_ne!(get(&bed.coordinator_ns, "192.0.2.2:6783", "/metrics").0, 200);

    // The shipped alert rules load, evaluate against the real series without
    // error, and stay silent on this healthy cluster (a rekey may make a
    // peer "connecting" for a moment: that one is held for 3 minutes first).
    wait_for("the alert rules evaluated", Duration::from_secs(30), || {
        let (status, body) = get(&ns, "127.0.0.1:9090", "/api/v1/rules");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rules: Vec<serde_json::Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules
            .iter()
            .all(|r| r["health"] == "ok" && r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        (status == 200 && rules.len() == 10 && evaluated).then_some(())
    });
    for _ in 0..3 {
        let alerts = query(&ns, "ALERTS{alertname!=\"WeavePeerUnreachable\"}");
        assert!(alerts.is_empty(), "alerts on a healthy cluster: {alerts:?}");
        std::thread::sleep(Duration::from_secs(1));
    }

    // Host 2's agent dies while host 1 keeps sending to its workload: the
    // coordinator sees a node without a watch, host 1 a peer that does not
    // answer (re-handshaken 15 s after data went unanswered).
    let (w0_ns, w1_ip) = (bed.workloads[w0].ns.clone(), bed.workloads[w1].ip.to_string());
    bed.signal_agent(1, nix::sys::signal::Signal::SIGKILL);
    let _pings = Killed(
        Command::new("ip")
            .args(["netns", "exec", &w0_ns, "ping", "-q", "-i", "0.5", "-w", "60", &w1_ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alert_on = |name: &str, instance: Option<&str>| {
        wait_for(&format!("alert {name} on {instance:?}"), Duration::from_secs(60), || {
            let alerts = query(&ns, &format!("ALERTS{{alertname=\"{name}\"}}"));
            alerts.iter().any(|(m, _)| instance.is_none_or(|i| m["instance"] == i)).then_some(())
        })
    };
    let agent0 = format!("{h1}:6782");
    alert_on("WeaveNodesNotWatching", None);
    alert_on("WeavePeerUnreachable", Some(&agent0));

    // An agent without its coordinator is alive but not ready (attach could
    // not allocate), and alerted on.
    bed.kill_coordinator();
    alert_on("WeaveAgentWithoutCoordinator", Some(&agent0));
    let h0 = bed.hosts[0].ns.clone();
    wait_for("agent /readyz to turn 503", Duration::from_secs(20), || {
        (get(&h0, &format!("{h1}:6782"), "/readyz").0 == 503).then_some(())
    });
    assert_eq!(get(&h0, &format!("{h1}:6782"), "/healthz").0, 200);
}
