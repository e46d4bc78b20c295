//! The routes attach sets in a container besides its subnet's.
use super::*;

impl Netlink {
    /// A default route through `gateway` on `ifname` (its subnet's egress),
    /// unless the container has an IPv4 default route already, of any metric
    /// (one of metric 0 beside another network's of 100 took its traffic;
    /// found by a review, 2026-12-05). Whether the default route is this one.
    pub async fn default_route(&self, ifname: &str, gateway: Ipv4Addr) -> Result<bool, Error> {
        let (index, defaults) = self.defaults(ifname).await?;
        if !defaults.is_empty() {
            return Ok(defaults.iter().any(|r| via(r, gateway, index)));
        }
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gateway)
            .output_interface(index)
            .build();
        match self.handle.route().add(route).execute().await {
            Ok(()) => Ok(true),
            Err(e) => Err(nl(format!("default route via {gateway} on {ifname}"), e)),
        }
    }

    /// Whether the container's default route goes through `gateway` on
    /// `ifname` (CNI CHECK), changing nothing.
    pub async fn has_default_via(&self, ifname: &str, gateway: Ipv4Addr) -> Result<bool, Error> {
        let (index, defaults) = self.defaults(ifname).await?;
        Ok(defaults.iter().any(|r| via(r, gateway, index)))
    }

    /// Inside a workload's namespace: the interface that holds `address`,
    /// and whether the namespace has an IPv4 default route of the main table
    /// already (any interface, any metric). None: no interface holds it.
    pub async fn holder_of(&self, address: Ipv4Addr) -> Result<Option<(String, bool)>, Error> {
        let addrs = dump("list addresses", || self.handle.address().get().execute()).await?;
        let local = AddressAttribute::Local(IpAddr::V4(address));
        let Some(index) = addrs.iter().find(|a| a.attributes.contains(&local)).map(|a| a.header.index) else {
            return Ok(None);
        };
        let links = self.links().await?;
        let Some(name) = links.iter().find(|l| l.header.index == index).and_then(name).map(str::to_string) else {
            return Ok(None);
        };
        let (_, defaults) = self.defaults(&name).await?;
        Ok(Some((name, !defaults.is_empty())))
    }

    /// `ifname`'s index and the IPv4 default routes of the main table.
    async fn defaults(&self, ifname: &str) -> Result<(u32, Vec<RouteMessage>), Error> {
        let index = self.link_index(ifname).await?.ok_or_else(|| Error::Netlink(format!("{ifname} does not exist")))?;
        let routes: Vec<RouteMessage> = dump("dump routes", || {
            self.handle.route().get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build()).execute()
        })
        .await?;
        let main = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        let defaults =
            routes.into_iter().filter(|r| r.header.destination_prefix_length == 0 && r.header.table == main).collect();
        Ok((index, defaults))
    }
}

fn via(route: &RouteMessage, gateway: Ipv4Addr, index: u32) -> bool {
    route.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet(gateway)))
        && route.attributes.contains(&RouteAttribute::Oif(index))
}
