//! The AEAD on the wire: an agent sealing and opening with OpenSSL's
//! assembly (`--aead openssl` where it is built) and one with `--aead ring`
//! (ring, what boringtun ships with) carry TCP both ways intact between their
//! workloads, and an on-path outsider's copy of a data message with one bit
//! of its tag or ciphertext changed is not delivered (the unchanged copy is). The unit tests of
//! `weave-aead` compare the two byte for byte at every packet length.
mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use common::{flows::tcp_flows_arrive_intact, *};

const FLOWS: usize = 4;
const BYTES: usize = 4 << 20;

fn aead_line(bed: &Bed, i: usize) -> String {
    wait_for(&format!("agent {}'s AEAD line", i + 1), Duration::from_secs(10), || {
        bed.log(i).lines().find(|l| l.contains("ChaCha20-Poly1305 for data packets")).map(str::to_string)
    })
}

#[test]
#[ignore = "needs root: network namespaces"]
fn agents_on_either_aead_carry_tcp_both_ways() {
    let mut bed = Bed::new();
    bed.agent_args = vec!["--aead".into(), "ring".into()];
    bed.add_host();
    // The assembly even where `auto` would pick ring (a CPU without AVX-512).
    let second = if weave_aead::assembly_built() { "openssl" } else { "auto" };
    bed.agent_args = vec!["--aead".into(), second.into()];
    bed.add_host();
    bed.agent_args = Vec::new();
    for i in 0..2 {
        bed.wait_peers(i, 1);
        bed.add_workload(i, "default");
    }
    assert!(aead_line(&bed, 0).contains("ring"), "host 1 runs ring: {}", aead_line(&bed, 0));
    let want = if weave_aead::assembly_built() { "openssl-x86_64-asm" } else { "ring" };
    assert!(aead_line(&bed, 1).contains(want), "host 2 runs {want}: {}", aead_line(&bed, 1));
    bed.wait_ping(0, 1, Duration::from_secs(15));
    tcp_flows_arrive_intact(&bed, 0, 1, FLOWS, BYTES);
    tcp_flows_arrive_intact(&bed, 1, 0, FLOWS, BYTES);

    // An on-path outsider: host 2 never sees three data messages from host
    // 1 (dropped at its input, after the capture that gives them to the
    // outsider). The outsider sends the first with one bit of its tag
    // changed and the second with one bit of its ciphertext changed: host 2
    // (OpenSSL's code) delivers neither. Then it sends the first unchanged:
    // delivered, so the forgery's counter was free and only its tag failed.
    let to = SocketAddr::from((bed.workloads[1].ip, 5301));
    let got = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let sink = got.clone();
    let listener = in_netns(&bed.workloads[1].ns, move || {
        let sock = UdpSocket::bind(to).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == b"last" {
                break;
            }
            sink.lock().unwrap().push(buf[..n].to_vec());
        }
    });
    let send = |bed: &Bed, what: Vec<u8>| {
        in_netns(&bed.workloads[0].ns, move || UdpSocket::bind("0.0.0.0:0").unwrap().send_to(&what, to).unwrap())
            .join()
            .unwrap();
    };
    let host = bed.host_ns(1);
    let from = bed.hosts[0].ip;
    let block = format!(
        "table inet wvtest {{\n chain blk {{\n  type filter hook input priority -400\n  ip saddr {from} udp dport {WG_PORT} drop\n }}\n}}\n"
    );
    let nft = |ns: &str, script: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            });
        assert!(out.unwrap().status.success(), "nft {script}");
    };
    nft(&host, &block);
    let filter = format!("udp and src host {from} and dst port {WG_PORT}");
    let cap = Capture::start(&host, "eth0", &filter, bed.path("sniff.pcap"));
    for b in [7u8, 8] {
        send(&bed, vec![b; 600]);
    }
    thread::sleep(Duration::from_secs(2)); // libpcap's block delay
    let (packets, _) = read_pcap(&cap.stop());
    nft(&host, "delete table inet wvtest");
    // Both messages may leave in one GSO send when host 1's agent read both
    // packets in one batch, and the capture then shows one super-packet:
    // its payload is the messages back to back, each MESSAGE bytes long.
    const MESSAGE: usize = 16 + 640 + 16;
    let data: Vec<&[u8]> = packets
        .iter()
        .filter(|p| p.payload.len() > 600 && p.payload[0] == 4)
        .flat_map(|p| p.payload.chunks(if p.payload.len() % MESSAGE == 0 { MESSAGE } else { p.payload.len() }))
        .collect();
    assert_eq!(data.len(), 2, "two data messages on the wire");
    // 600 bytes of UDP payload make a 628-byte packet, padded to 640 (a
    // multiple of 16, as WireGuard pads) inside the 16-byte header and tag;
    // what arrives below is the 600 bytes, the pad cut off.
    let lens: Vec<usize> = data.iter().map(|d| d.len()).collect();
    assert_eq!(lens, vec![MESSAGE; 2], "data messages padded to 16");
    assert!(got.lock().unwrap().is_empty(), "the blocked messages did not arrive");
    let mut bad_tag = data[0].to_vec();
    *bad_tag.last_mut().unwrap() ^= 0x80;
    let mut bad_text = data[1].to_vec();
    bad_text[16 + 300] ^= 0x01;
    let genuine = data[0].to_vec();
    let target = SocketAddr::from((bed.hosts[1].ip, WG_PORT));
    let outsider = bed.add_bare_host("192.0.2.250");
    let replay = |outsider: &str, what: Vec<u8>| {
        in_netns(outsider, move || UdpSocket::bind("0.0.0.0:0").unwrap().send_to(&what, target).unwrap())
            .join()
            .unwrap();
    };
    replay(&outsider, bad_tag);
    replay(&outsider, bad_text);
    thread::sleep(Duration::from_secs(2));
    assert!(got.lock().unwrap().is_empty(), "a message with a changed bit was delivered");
    replay(&outsider, genuine);
    wait_for("the unchanged message to be delivered", Duration::from_secs(5), || {
        (!got.lock().unwrap().is_empty()).then_some(())
    });
    assert_eq!(*got.lock().unwrap(), vec![vec![7u8; 600]], "only the unchanged message, once");
    send(&bed, b"last".to_vec());
    listener.join().unwrap();
}
