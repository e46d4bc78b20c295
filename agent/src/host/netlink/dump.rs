//! Netlink dumps, asked again when the kernel interrupts them, and what a dumped link says.
use super::*;

/// Collects a dump. One that changed under the kernel's walk (`NLM_F_DUMP_INTR`,
/// which the netlink crate answers with EBUSY: seen in CI on a link dump, an
/// attach right after an agent restart) is asked again, up to three times.
pub(super) async fn dump<T, S>(what: &str, request: impl Fn() -> S) -> Result<Vec<T>, Error>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>>,
{
    let mut tries = 0;
    loop {
        match request().try_collect().await {
            Err(e) if errno(&e) == Some(nix::libc::EBUSY) && tries < 3 => tries += 1,
            other => return other.map_err(|e| nl(what, e)),
        }
    }
}

/// Whether a bridge snoops multicast (the kernel's default).
pub(super) fn bridge_snoops(l: &LinkMessage) -> bool {
    info_data(l, |d| match d {
        InfoData::Bridge(b) => b.iter().find_map(|a| match a {
            InfoBridge::MulticastSnooping(on) => Some(*on),
            _ => None,
        }),
        _ => None,
    })
    .unwrap_or(false)
}

/// A VXLAN device's cap on learned MACs (0: none).
pub(super) fn vxlan_learned_max(l: &LinkMessage) -> u32 {
    info_data(l, |d| match d {
        InfoData::Vxlan(v) => v.iter().find_map(|a| if let InfoVxlan::Limit(n) = a { Some(*n) } else { None }),
        _ => None,
    })
    .unwrap_or(0)
}

/// A bridge's cap on learned MACs, where the kernel has one (6.8 and later).
pub(super) fn bridge_learned_max(l: &LinkMessage) -> Option<u32> {
    info_data(l, |d| match d {
        InfoData::Bridge(b) => {
            b.iter().find_map(|a| if let InfoBridge::FdbMaxLearned(n) = a { Some(*n) } else { None })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, num::NonZeroI32};

    use super::*;

    fn failing(code: i32) -> rtnetlink::Error {
        let mut m = netlink_packet_core::ErrorMessage::default();
        m.code = NonZeroI32::new(-code);
        rtnetlink::Error::NetlinkError(m)
    }

    /// Answers `busy` interrupted dumps, then one entry (or `last`'s error).
    async fn asked(busy: usize, last: Option<i32>) -> (Result<Vec<u8>, Error>, usize) {
        let calls = Cell::new(0);
        let r = dump("test dump", || {
            calls.set(calls.get() + 1);
            let item = match (calls.get() <= busy, last) {
                (true, _) => Err(failing(nix::libc::EBUSY)),
                (false, Some(code)) => Err(failing(code)),
                (false, None) => Ok(7),
            };
            futures::stream::iter([item])
        })
        .await;
        (r, calls.get())
    }

    #[tokio::test]
    async fn an_interrupted_dump_is_asked_again_three_times_at_most() {
        let (r, calls) = asked(3, None).await;
        assert_eq!((r.unwrap(), calls), (vec![7], 4));
        let (r, calls) = asked(4, None).await;
        assert!(r.unwrap_err().to_string().contains("test dump"), "the fourth EBUSY is the answer");
        assert_eq!(calls, 4);
        let (r, calls) = asked(0, Some(nix::libc::EPERM)).await;
        assert!(r.is_err() && calls == 1, "another error is not asked again");
    }
}
