//! Local API request JSON (agent/src/local_api.rs): one line from a client of
//! the agent's Unix socket, parsed as the server does (`serde_json::from_str`
//! per line), and an answer line as `agent status`/the CNI plugin parse it.
//! Invariants: no panic; whatever parses re-encodes to JSON that parses to
//! the same encoding (nothing is lost or invented on the way); an answer
//! re-encodes to JSON that parses.

use weave_agent::plan::addr_spec::AddrSpec;
use weave_proto::local_api::{Request, Response};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The server reads lines; so does the client.
    for line in text.lines() {
        if let Ok(request) = serde_json::from_str::<Request>(line) {
            let encoded = serde_json::to_string(&request).expect("a request encodes");
            let again: Request = serde_json::from_str(&encoded).expect("an encoded request parses");
            assert_eq!(serde_json::to_string(&again).expect("encodes"), encoded, "request round trip");
            // What the handler does first with the address list of attach/detach/expose/hide.
            if let Request::Attach { addrs, .. }
            | Request::Detach { addrs, .. }
            | Request::Expose { addrs }
            | Request::Hide { addrs } = &request
            {
                let _ = AddrSpec::parse_all(addrs);
            }
        }
        if let Ok(response) = serde_json::from_str::<Response>(line) {
            let encoded = serde_json::to_string(&response).expect("a response encodes");
            // Parses again (not compared: serde_json's float parsing may move an f64 by one ulp).
            let _: Response = serde_json::from_str(&encoded).expect("an encoded response parses");
            if let Response::Status(s) = &response {
                let _ = weave_proto::local_api::format_status(s);
            }
        }
    }
}
