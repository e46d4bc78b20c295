//! The TCP accept loop's error policy. tonic ends `serve` on an accept error
//! it does not know (EMFILE, ENFILE, ENOBUFS), and retrying at once only
//! spins: when the process is out of file descriptors, nothing but closing
//! some helps. So such errors are logged and retried after a pause, during
//! which established connections (and the handshake timeout) free some.
use std::{io, time::Duration};

use futures::{Stream, StreamExt};

/// How long accepting pauses after an error that is not one connection's.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// Errors that concern only the connection being accepted: retry at once.
fn connection_only(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    )
}

/// `incoming` without its errors: each is retried, after [`BACKOFF`] unless
/// it concerned only one connection. Ends when `incoming` ends.
pub(crate) fn backing_off<T>(
    incoming: impl Stream<Item = io::Result<T>> + Send + Unpin + 'static,
) -> impl Stream<Item = io::Result<T>> + Send + 'static
where
    T: Send + 'static,
{
    futures::stream::unfold(incoming, |mut incoming| async move {
        loop {
            match incoming.next().await? {
                Ok(conn) => return Some((Ok(conn), incoming)),
                Err(e) if connection_only(&e) => tracing::debug!(error = %e, "accept: connection error"),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed (out of file descriptors?); pausing before the next");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[tokio::test]
    async fn out_of_descriptors_pauses_and_goes_on_instead_of_ending() {
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        let inner = futures::stream::iter(vec![Err(emfile()), Err(emfile()), Ok(1), Err(aborted), Ok(2)]);
        let mut s = Box::pin(backing_off(inner));
        let start = std::time::Instant::now();
        assert_eq!(s.next().await.map(|r| r.unwrap()), Some(1));
        assert!(start.elapsed() >= 2 * BACKOFF, "one pause per EMFILE");
        let start = std::time::Instant::now();
        assert_eq!(s.next().await.map(|r| r.unwrap()), Some(2));
        assert!(start.elapsed() < BACKOFF, "no pause for one aborted connection");
        assert!(s.next().await.is_none(), "ends with the listener");
    }
}
