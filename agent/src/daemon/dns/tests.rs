//! The DNS server's own tests.
use super::*;

/// `x.example. A`, id `id`.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'x', 7]);
    q.extend_from_slice(b"example\x00\x00\x01\x00\x01");
    q
}

/// Over UDP the upstream (or whoever reaches the agent's socket from
/// its address) first sends the query back, a reply to another id and
/// a runt: only the answer after them is relayed. Over TCP a reply that
/// is not an answer (QR clear) is not relayed either: SERVFAIL instead.
#[tokio::test]
async fn only_an_answer_to_the_query_is_relayed() {
    let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_upstream = up.local_addr().unwrap();
    let udp = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = up.recv_from(&mut buf).unwrap();
        let q = buf[..n].to_vec();
        let (mut other, mut answer) = (q.clone(), q.clone());
        other[1] ^= 1;
        other[2] |= 0x80;
        answer[2] |= 0x80;
        for d in [q.clone(), other, q[..2].to_vec(), answer] {
            up.send_to(&d, from).unwrap();
        }
    });
    let server = DnsServer::new("weave.local.", vec![udp_upstream]);
    let q = query(7);
    let got = server.forward(&q, true).await.expect("the upstream's answer");
    assert!(got.len() == q.len() && got[..2] == q[..2] && got[2] & 0x80 != 0, "{got:?}");
    udp.join().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_upstream = listener.local_addr().unwrap();
    let tcp = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let q = read_framed(&mut s).await.unwrap();
        write_framed(&mut s, &q).await.unwrap();
    });
    let server = DnsServer::new("weave.local.", vec![tcp_upstream]);
    assert_eq!(server.forward(&q, false).await, None, "a query sent back is no answer");
    tcp.await.unwrap();
}

/// An upstream's answer bigger than the UDP client takes is truncated (TC,
/// header and question) for it, as the map's own answers are; over TCP, or
/// when it fits, it goes whole. One that does not parse goes as the query's
/// question with TC.
#[tokio::test]
async fn a_relayed_answer_fits_the_udp_clients_size() {
    let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = up.local_addr().unwrap();
    // Answers each query with 40 TXT records of 50 bytes (~2.5 KB), then a runt answer.
    let answers = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for round in 0..3 {
            let (n, from) = up.recv_from(&mut buf).unwrap();
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut a = Message::response(q.metadata.id, q.metadata.op_code);
            a.queries = q.queries.clone();
            for _ in 0..40 {
                let txt = hickory_proto::rr::rdata::TXT::new(vec!["x".repeat(50)]);
                a.add_answer(hickory_proto::rr::Record::from_rdata(
                    q.queries[0].name().clone(),
                    60,
                    hickory_proto::rr::RData::TXT(txt),
                ));
            }
            let mut bytes = a.to_vec().unwrap();
            if round == 2 {
                bytes.truncate(600); // cut inside a record: does not parse
            }
            up.send_to(&bytes, from).unwrap();
        }
    });
    let server = DnsServer::new("weave.local.", vec![upstream]);
    let q = query(9);
    let short = server.respond(&q, Some(512)).await.unwrap();
    let m = Message::from_vec(&short).unwrap();
    assert!(short.len() <= 512 && m.metadata.truncation && m.answers.is_empty(), "{}", short.len());
    assert_eq!((m.metadata.id, m.queries.len()), (9, 1));
    let whole = server.respond(&q, Some(4096)).await.unwrap();
    assert_eq!(Message::from_vec(&whole).unwrap().answers.len(), 40);
    let cut = Message::from_vec(&server.respond(&q, Some(512)).await.unwrap()).unwrap();
    let asked = Message::from_vec(&q).unwrap();
    assert!(cut.metadata.truncation && cut.answers.is_empty(), "{cut:?}");
    assert_eq!((cut.metadata.id, &cut.queries), (9, &asked.queries));
    answers.join().unwrap();
}

/// SERVFAIL when no upstream answers carries the question and RD, RA, as
/// any answer does (a bare header could be taken for a spurious reply).
#[tokio::test]
async fn a_servfail_answers_the_question() {
    let server = DnsServer::new("weave.local.", vec![]);
    let (q, asked) = (query(11), Message::from_vec(&query(11)).unwrap());
    for udp in [Some(512), None] {
        let m = Message::from_vec(&server.respond(&q, udp).await.unwrap()).unwrap();
        assert_eq!((m.metadata.response_code, m.metadata.id, &m.queries), (ResponseCode::ServFail, 11, &asked.queries));
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available, "{m:?}");
    }
}
