//! The routes attach sets in a container besides its subnet's.
use super::*;

impl Netlink {
    /// A default route through `gateway` on `ifname` (its subnet's egress),
    /// unless the container has an IPv4 default route already, of any metric
    /// (one of metric 0 beside another network's of 100 took its traffic;
    /// found by a review, 2026-12-05). Whether the default route is this one.
    pub async fn default_route(&self, ifname: &str, gateway: Ipv4Addr) -> Result<bool, Error> {
        let index = self.link_index(ifname).await?.ok_or_else(|| Error::Netlink(format!("{ifname} does not exist")))?;
        let routes: Vec<RouteMessage> = dump("dump routes", || {
            self.handle.route().get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build()).execute()
        })
        .await?;
        let defaults: Vec<&RouteMessage> = routes
            .iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
            })
            .collect();
        if !defaults.is_empty() {
            return Ok(defaults.iter().any(|r| {
                r.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet(gateway)))
                    && r.attributes.contains(&RouteAttribute::Oif(index))
            }));
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
}
