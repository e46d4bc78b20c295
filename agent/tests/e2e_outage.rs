//! The coordinator goes away: traffic between existing hosts continues with
//! zero loss, a restarted agent comes back from its saved map, and after the
//! coordinator returns a change reaches every agent.
mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

/// The issue asks for 60 s; `WEAVE_E2E_OUTAGE_SECS` shortens it during development.
fn outage() -> u64 {
    std::env::var("WEAVE_E2E_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

#[test]
#[ignore = "needs root: network namespaces"]
fn traffic_survives_a_coordinator_outage() {
    let mut bed = Bed::with_hosts(3);
    for h in 0..3 {
        bed.add_workload(h, "default");
    }
    bed.wait_ping(0, 1, Duration::from_secs(10));
    bed.wait_ping(0, 2, Duration::from_secs(10));
    bed.kill_coordinator();
    for h in 0..3 {
        wait_for("agents to notice the outage", Duration::from_secs(60), || {
            bed.status(h).filter(|s| !s.coordinator_connected).map(|_| ())
        });
    }

    // The agents say why, under tonic's "tcp connect error" (a review,
    // 2026-12-06: the cause was left out).
    wait_for("host 1 to log why the watch failed", Duration::from_secs(20), || {
        let log = bed.log(0);
        log.lines()
            .any(|l| l.contains("cannot watch the network map") && l.contains("Connection refused"))
            .then_some(())
    });

    // 10 pings a second for the whole outage, none may be lost.
    let secs = outage();
    let count = (secs * 10).to_string();
    let (ns, to) = (bed.workloads[0].ns.clone(), bed.workloads[1].ip.to_string());
    let pinger = std::thread::spawn(move || in_ns(&ns, &["ping", "-q", "-i", "0.1", "-c", &count, "-W", "2", &to]));

    // Meanwhile host 3's agent dies and comes back with no coordinator to ask.
    bed.signal_agent(2, Signal::SIGKILL);
    bed.start_agent(2, false);
    bed.wait_ping(0, 2, Duration::from_secs(10));
    bed.wait_ping(2, 1, Duration::from_secs(10));
    assert!(!bed.status(2).unwrap().coordinator_connected);

    // An attach meanwhile says why it cannot be done, exit 3 (it was
    // tonic's bare "tcp connect error").
    let c = bed.add_container("during-outage");
    let refused = bed.weavectl(0, &["attach", &format!("/run/netns/{c}")]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{said}");
    assert!(said.contains("the coordinator cannot serve this now") && said.contains("try again"), "{said}");

    let out = pinger.join().unwrap();
    // Said once per agent, not at every retry (a WARN every 5 s for the
    // whole outage; found by a review, 2026-12-08).
    let warned =
        bed.log(0).lines().filter(|l| l.contains(" WARN ") && l.contains("cannot watch the network map")).count();
    assert!(warned <= 2, "{warned} warnings in a {secs} s outage");
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("{} packets transmitted, {} received", secs * 10, secs * 10);
    assert!(out.status.success() && text.contains(&expected), "loss during the outage:\n{text}");

    // The coordinator returns; a change reaches every agent.
    bed.start_coordinator();
    let subnet = bed.admin(|mut api| async move {
        let req = weave_proto::v1::AddSubnetRequest {
            cidr: "10.33.0.0/24".into(),
            name: "after-outage".into(),
            egress: false,
        };
        api.subnets.add_subnet(req).await.unwrap().into_inner()
    });
    for h in 0..3 {
        let ns = bed.hosts[h].ns.clone();
        let bridge = format!("wvbr-{}", subnet.vni);
        wait_for(&format!("host {} to get the new subnet", h + 1), Duration::from_secs(30), || {
            let s = bed.status(h)?;
            let has = s.coordinator_connected
                && s.segments.iter().any(|g| g.subnet == subnet.cidr)
                && in_ns(&ns, &["ip", "link", "show", &bridge]).status.success();
            has.then_some(())
        });
    }
    assert!(bed.log(0).contains("watching the network map again"), "the end of the outage is said");
}

/// A named container that restarts while the coordinator is down is
/// refused (exit 3: the saved map cannot say whether its address is still
/// its own; an admin may have released it meanwhile); once the coordinator
/// answers, the gone container's address is given back and kept for it,
/// and the next attach gets it again.
#[test]
#[ignore = "needs root: network namespaces"]
fn a_named_container_restarted_during_an_outage_gets_its_address_once_the_coordinator_answers() {
    let mut bed = Bed::with_hosts(2);
    let other = bed.add_workload(1, "default");
    let web = bed.add_container("web");
    let path = format!("/run/netns/{web}");
    let attach = |bed: &Bed| bed.weavectl(0, &["attach", "--name", "web", &path]);
    let out = attach(&bed);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let from = bed.workloads[other].ns.clone();
    assert!(ping_within(&from, ip.parse().unwrap(), 10), "web at {ip} before the outage");

    bed.kill_coordinator();
    wait_for("host 1 to notice the outage", Duration::from_secs(60), || {
        bed.status(0).filter(|s| !s.coordinator_connected).map(|_| ())
    });
    ok(&["ip", "netns", "del", &web]);
    ok(&["ip", "netns", "add", &web]);
    let out = attach(&bed);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("the coordinator cannot serve this now"), "{said}");

    bed.start_coordinator();
    wait_for("host 1 to reconnect", Duration::from_secs(60), || {
        bed.status(0).filter(|s| s.coordinator_connected).map(|_| ())
    });
    let again = wait_for("the restarted container's attach", Duration::from_secs(30), || {
        let out = attach(&bed);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(again, ip, "the address kept for web");
    assert!(ping_within(&from, ip.parse().unwrap(), 10), "web at {ip} after its restart");
}
