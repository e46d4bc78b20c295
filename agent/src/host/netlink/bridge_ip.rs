//! Addresses on a bridge: this host's exposed one (expose/hide, and the
//! sweep that keeps them in step with the map).
use super::*;

impl Netlink {
    /// Adds (or removes) `address/prefix` on `ifname` in this namespace
    /// (expose/hide on a bridge). Idempotent both ways.
    pub async fn set_address(&self, ifname: &str, address: Ipv4Addr, prefix: u8, present: bool) -> Result<(), Error> {
        let index = self.link_index(ifname).await?.ok_or_else(|| Error::Netlink(format!("{ifname} does not exist")))?;
        if present {
            return match self.handle.address().add(index, address.into(), prefix).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
                Err(e) => Err(nl(format!("add {address}/{prefix} to {ifname}"), e)),
            };
        }
        let addrs = self.address_messages(index).await?;
        for a in addrs {
            let ours =
                a.attributes.iter().any(|x| matches!(x, AddressAttribute::Local(IpAddr::V4(ip)) if *ip == address));
            // Gone meanwhile (the reconcile, once the map lost it) is removed.
            if ours {
                match self.handle.address().del(a).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                    Err(e) => return Err(nl(format!("remove {address} from {ifname}"), e)),
                }
            }
        }
        Ok(())
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, Error> {
        dump("list addresses", || self.handle.address().get().set_link_index_filter(index).execute()).await
    }

    /// The IPv4 addresses (with prefix lengths) of every link in this
    /// namespace, by link name; a link without any is there, empty. Two
    /// dumps, however many links.
    pub async fn ipv4_by_link(&self) -> Result<std::collections::BTreeMap<String, Vec<(Ipv4Addr, u8)>>, Error> {
        let links = self.links().await?;
        let names: std::collections::BTreeMap<u32, String> =
            links.iter().filter_map(|l| Some((l.header.index, super::name(l)?.to_string()))).collect();
        let mut out: std::collections::BTreeMap<String, Vec<(Ipv4Addr, u8)>> =
            names.values().map(|n| (n.clone(), Vec::new())).collect();
        for a in dump("list addresses", || self.handle.address().get().execute()).await? {
            let Some(name) = names.get(&a.header.index) else { continue };
            for x in &a.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = x {
                    out.entry(name.clone()).or_default().push((*ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }
}
