//! Queries refused from their header alone, before they are parsed.
use hickory_proto::op::{Message, OpCode, ResponseCode};

/// FORMERR for a query that is not one, counted.
pub(super) fn malformed(query: &[u8]) -> Option<Vec<u8>> {
    count_malformed();
    form_error(query)
}

/// `weave_dns_queries_total{result="malformed"}`: FORMERR and NOTIMP alike.
fn count_malformed() {
    metrics::counter!("weave_dns_queries_total", "result" => "malformed").increment(1);
}

/// The longest query taken, in bytes: one question (a name of at most 255
/// bytes) with an EDNS record, its cookie and padding, fits with room.
pub(super) const MAX_QUERY: usize = 1232;

/// The reply to a query no stub resolver sends, from its header alone,
/// before it is parsed: longer than [`MAX_QUERY`], not a standard query
/// (NOTIMP), or not one question with at most one additional record (EDNS's).
/// Every query was parsed whole first: 64 KB ones of 10,000 questions, each
/// a pointer to a long name, took the DNS thread 27 ms each, and one
/// container's stream of them stalled every other container's lookups on
/// the host (found by a review, 2026-12-06). None: parse it.
pub(super) fn misshapen(query: &[u8]) -> Option<Option<Vec<u8>>> {
    let header = query.get(..12)?;
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let op_code = (header[2] >> 3) & 0x0f;
    if query.len() > MAX_QUERY || (op_code == 0 && (count(4), count(6), count(8)) != (1, 0, 0)) || count(10) > 1 {
        return Some(malformed(query));
    }
    if op_code != 0 {
        count_malformed();
        let id = count(0);
        return Some(Message::error_msg(id, OpCode::Unknown(op_code), ResponseCode::NotImp).to_vec().ok());
    }
    None
}

/// FORMERR for a query that does not parse, echoing its id if it has one
/// (so that the client stops waiting); nothing for fewer than two bytes.
fn form_error(query: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::{MAX_QUERY, misshapen};

    /// A header with `op_code` and the four counts, then `len` bytes in all.
    fn header(op_code: u8, counts: [u16; 4], len: usize) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, op_code << 3, 0];
        for c in counts {
            q.extend_from_slice(&c.to_be_bytes());
        }
        q.resize(len.max(12), 0);
        q
    }

    #[test]
    fn only_one_question_with_at_most_edns_and_within_the_size_is_parsed() {
        // Parsed: a question, with or without EDNS, up to the size.
        for q in [header(0, [1, 0, 0, 0], 40), header(0, [1, 0, 0, 1], MAX_QUERY)] {
            assert_eq!(misshapen(&q), None);
        }
        // Shorter than a header: the parser's FORMERR.
        assert_eq!(misshapen(&[0x12, 0x34, 0x01]), None);
        // FORMERR (rcode 1) with the id, unparsed.
        for q in [
            header(0, [1, 0, 0, 0], MAX_QUERY + 1),
            header(0, [2, 0, 0, 0], 60),
            header(0, [0, 0, 0, 0], 12),
            header(0, [1, 1, 0, 0], 60),
            header(0, [1, 0, 1, 0], 60),
            header(0, [1, 0, 0, 2], 60),
            header(5, [1, 0, 0, 2], 60),
        ] {
            let out = misshapen(&q).expect("refused").expect("answered");
            assert_eq!((&out[..2], out[2] & 0x80, out[3] & 0x0f), (&[0x12, 0x34][..], 0x80, 1), "{:?}", &q[..12]);
        }
        // Another opcode (UPDATE, 5; NOTIFY, 4): NOTIMP (4), its opcode kept.
        for op_code in [4, 5] {
            let out = misshapen(&header(op_code, [1, 1, 1, 0], 60)).expect("refused").expect("answered");
            assert_eq!((out[2] >> 3 & 0x0f, out[3] & 0x0f), (op_code, 4));
        }
    }
}
