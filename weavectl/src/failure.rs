//! Why a command failed, as one line (`<what failed>: <why>`) and an exit code
//! that scripts can branch on (documented in `weavectl --help`).
use std::fmt;

use tonic::Code;
use weave_proto::client::ConnectError;

/// How weave_proto's pin verifier starts its refusal.
const PIN_MISMATCH: &str = "the coordinator's identity does not match the pin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Other = 1,
    Usage = 2,
    Unreachable = 3,
    NotFound = 4,
    Conflict = 5,
    Denied = 6,
    Exhausted = 7,
}

#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) what: String,
    pub(crate) why: String,
    pub(crate) exit: Exit,
}

impl Failure {
    pub(crate) fn new(exit: Exit, what: impl Into<String>, why: impl fmt::Display) -> Self {
        Self { what: what.into(), why: why.to_string(), exit }
    }

    /// A value refused before anything was sent.
    pub(crate) fn usage(what: impl Into<String>, why: impl fmt::Display) -> Self {
        Self::new(Exit::Usage, what, why)
    }

    /// A call the coordinator answered with an error. Its message is already
    /// specific ("10.2.0.0/16 overlaps subnet ..."), so it is passed through.
    pub(crate) fn status(what: impl Into<String>, status: &tonic::Status) -> Self {
        // The connection broke mid-call (tonic's Unknown "transport error":
        // a coordinator that closed it to hold fewer connections, one that
        // went away): no answer, so no knowing (exit 1, "transport error",
        // said nothing; found by a review, 2026-12-07).
        if status.code() == Code::Unknown && weave_proto::client::cut_off(status) {
            let cause = std::error::Error::source(status).map(weave_proto::client::error_chain);
            let why = format!(
                "the connection to the coordinator broke before it answered ({}): if this was a change, it may or \
                 may not have been made (look, then retry); a coordinator that holds too many connections closes \
                 some that proved nothing yet (its log says so: --max-unauthenticated-connections)",
                cause.as_deref().unwrap_or(status.message())
            );
            return Self::new(Exit::Unreachable, what, why);
        }
        let exit = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Exit::Usage,
            Code::Unavailable | Code::DeadlineExceeded => Exit::Unreachable,
            Code::NotFound => Exit::NotFound,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => Exit::Conflict,
            Code::PermissionDenied | Code::Unauthenticated => Exit::Denied,
            Code::ResourceExhausted => Exit::Exhausted,
            _ => Exit::Other,
        };
        let why = match status.message() {
            // tonic's answer for a method the server does not have.
            "" if status.code() == Code::Unimplemented => {
                "the coordinator does not know this call: it is older than this weavectl (upgrade it)".to_string()
            }
            "" => format!("{} (no message from the coordinator)", status.code().description()),
            // A transport failure mid-call has the cause in the status source.
            m if exit == Exit::Unreachable => match std::error::Error::source(status) {
                Some(s) => format!("{m}: {}", weave_proto::client::error_chain(s)),
                None => m.to_string(),
            },
            m => m.to_string(),
        };
        Self::new(exit, what, why)
    }

    pub(crate) fn connect(e: ConnectError) -> Self {
        match e {
            ConnectError::Unreachable { addr, cause } => {
                // tonic's wrappers ("transport error: unexpected error: ") say nothing;
                // the pin verifier's own sentence explains a mismatch.
                let why = match cause.find(PIN_MISMATCH) {
                    Some(at) => cause[at..].to_string(),
                    None => cause.strip_prefix("transport error: ").unwrap_or(&cause).to_string(),
                };
                Self::new(Exit::Unreachable, format!("cannot reach the coordinator at {addr}"), why)
            }
            ConnectError::Address(addr) => Self::usage("coordinator address", address_hint(&addr)),
            ConnectError::Credential => {
                Self::usage("admin credential", "it contains characters not allowed in a header")
            }
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line, whatever the cause or what the user typed contained:
        // line breaks as spaces, and no other control character reaches the
        // terminal (an argument with ESC sequences, quoted back by the
        // coordinator, was echoed raw; a newline in an argument made two
        // lines; found by a review, 2026-12-08).
        use weave_proto::command_line::printable;
        write!(f, "{}: {}", printable(&self.what), printable(&self.why).trim())
    }
}

/// A request the coordinator answered without an option it does not know
/// (`flag`: an older coordinator drops fields it has no place for), the
/// change taken back (`undone`: how, if that worked).
pub(crate) fn older_coordinator(what: impl Into<String>, flag: &str, undone: Option<&str>) -> Failure {
    let back = undone.unwrap_or("taking it back failed: look, and undo it by hand");
    Failure::new(
        Exit::Other,
        what,
        format!("the coordinator does not know {flag}: it is older than this weavectl (upgrade it); {back}"),
    )
}

/// `Result` for everything a command does.
pub(crate) type Outcome<T = ()> = Result<T, Failure>;

/// Attaches "what was being done" to a gRPC error.
pub(crate) trait Doing<T> {
    fn doing(self, what: impl Into<String>) -> Outcome<T>;
}

impl<T> Doing<T> for Result<tonic::Response<T>, tonic::Status> {
    fn doing(self, what: impl Into<String>) -> Outcome<T> {
        self.map(tonic::Response::into_inner).map_err(|s| Failure::status(what, &s))
    }
}

/// Why `addr` is no coordinator address, and how to write one: an IPv6
/// address goes in brackets (the IPv4 example alone left that to guess),
/// and a zone is not taken.
fn address_hint(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
    if addr.contains('%') {
        format!("'{addr}': a zone (%…) is not supported: give a global or unique-local address, as [2001:db8::1]:6783")
    } else if host.contains(':') && !host.starts_with('[') && port.parse::<u16>().is_ok() {
        format!("'{addr}': write an IPv6 address in brackets, as [{host}]:{port}")
    } else {
        format!("'{addr}' is not host:port (like 192.0.2.1:6783 or [2001:db8::1]:6783)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the user typed and what the coordinator quoted back reach the
    /// terminal as one line, with no control character in it.
    #[test]
    fn a_failure_is_one_printable_line() {
        let f = Failure::status("removing node a\nb", &tonic::Status::not_found("no node 'a\x1b[31mb'\r\n"));
        assert_eq!(f.to_string(), "removing node a b: no node 'a\\u{1b}[31mb'");
        assert!(!f.to_string().chars().any(char::is_control));
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        let f = Failure::status("adding subnet 10.2.0.0/16", &tonic::Status::already_exists("overlaps"));
        assert_eq!((f.exit, f.to_string().as_str()), (Exit::Conflict, "adding subnet 10.2.0.0/16: overlaps"));
        assert_eq!(Failure::status("x", &tonic::Status::not_found("y")).exit, Exit::NotFound);
        assert_eq!(Failure::status("x", &tonic::Status::unauthenticated("y")).exit, Exit::Denied);
        assert_eq!(Failure::status("x", &tonic::Status::resource_exhausted("y")).exit, Exit::Exhausted);
        assert_eq!(Failure::status("x", &tonic::Status::internal("y")).exit, Exit::Other);
        // A connection that broke mid-call: exit 3, saying the change may have been made.
        let broke = Failure::status("listing subnets", &tonic::Status::unknown("transport error"));
        assert_eq!(broke.exit, Exit::Unreachable);
        assert!(broke.to_string().contains("broke before it answered (transport error)"), "{broke}");
        assert!(broke.to_string().contains("may or may not have been made"), "{broke}");
        assert_eq!(Failure::status("x", &tonic::Status::unknown("y")).exit, Exit::Other);
        assert_eq!(Failure::usage("x", "a\nb").to_string(), "x: a b");
        let bad = |a: &str| Failure::connect(ConnectError::Address(a.into()));
        assert_eq!(
            bad("2001:db8::2:6783").to_string(),
            "coordinator address: '2001:db8::2:6783': write an IPv6 address in brackets, as [2001:db8::2]:6783"
        );
        assert_eq!(bad("2001:db8::2:6783").exit, Exit::Usage);
        assert!(bad("[fe80::1%eth0]:6783").to_string().contains("a zone (%…) is not supported"));
        assert!(bad("host").to_string().contains("is not host:port (like 192.0.2.1:6783 or [2001:db8::1]:6783)"));
        // A call an older coordinator does not have (tonic answers it without a message).
        let older = Failure::status("sharing web", &tonic::Status::unimplemented(""));
        assert_eq!(
            older.to_string(),
            "sharing web: the coordinator does not know this call: it is older than this weavectl (upgrade it)"
        );
    }
}
