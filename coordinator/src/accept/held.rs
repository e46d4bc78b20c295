//! The connections the accept loop holds: counted per address, per IPv6
//! /64 and in all; which of them proved a credential; which to close when
//! every slot is taken or one never proves anything.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;

/// The group a connection is ranked in: its address (IPv4-mapped as
/// IPv4), or for IPv6 its /64 (one host may hold a whole /64).
pub(super) fn group_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// What one held connection shares with its stream.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Set when the connection is closed (to make room, or for never
    /// proving a credential): every read and write then fails.
    pub(super) closed: AtomicBool,
    pub(super) waker: AtomicWaker,
    /// Set by the first call on it with a valid credential or join token.
    pub(super) authenticated: AtomicBool,
    /// Set when it is no longer counted.
    released: AtomicBool,
    /// Calls on it not answered yet: the sweep leaves it open meanwhile (a
    /// join queued behind a busy store is not cut off at 10 s).
    pub(super) in_flight: AtomicU32,
    /// Its group (set when admitted).
    group: Option<IpAddr>,
}

/// A connection as a request knows it: (local, peer) socket addresses. One
/// peer address and port may hold connections to several local addresses
/// of a host at once (a review found one hiding another by that).
pub(super) type Ends = (SocketAddr, SocketAddr);

/// Longest a call in flight holds a connection open past its time to prove
/// something: a join queued behind a busy store gets that long (more than
/// the default `--rpc-deadline`), an outsider's own slow calls no longer.
pub(super) const BUSY_GRACE: Duration = Duration::from_secs(60);

/// One held connection: its id (rising), its ends, its slot.
type Entry = (u64, Ends, Arc<Slot>);

/// Why a connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Evicted {
    /// The oldest connection that had not proved a credential.
    Unauthenticated(IpAddr),
    /// The oldest connection of the group holding the most.
    Biggest(IpAddr),
}

#[derive(Debug, Default)]
pub(super) struct Held {
    /// Each group's connections, oldest first.
    groups: HashMap<IpAddr, VecDeque<Entry>>,
    /// Connections per address.
    by_address: HashMap<IpAddr, usize>,
    /// The groups by how many connections each holds (the biggest found
    /// without a walk over all).
    by_size: BTreeMap<usize, HashSet<IpAddr>>,
    /// Each connection by its ends (what a request knows).
    by_ends: HashMap<Ends, Arc<Slot>>,
    /// Every connection in the order it came, with the time it must have
    /// proved a credential by; authenticated and closed ones are dropped
    /// from the front as they are met.
    unproven: VecDeque<(Instant, Entry)>,
    pub(super) total: usize,
    /// Of `total`, those that have not proved anything yet.
    pub(super) unproven_held: usize,
    /// The same per group.
    unproven_by_group: HashMap<IpAddr, usize>,
    next: u64,
}

impl Held {
    pub(super) fn held_by_address(&self, address: &IpAddr) -> usize {
        self.by_address.get(address).copied().unwrap_or(0)
    }

    pub(super) fn held_by_group(&self, address: &IpAddr) -> usize {
        self.groups.get(&group_of(*address)).map_or(0, VecDeque::len)
    }

    fn resize(&mut self, group: IpAddr, from: usize, to: usize) {
        if let Some(set) = self.by_size.get_mut(&from) {
            set.remove(&group);
            if set.is_empty() {
                self.by_size.remove(&from);
            }
        }
        if to > 0 {
            self.by_size.entry(to).or_default().insert(group);
        }
    }

    /// Counts a new connection with `ends`, which must prove a credential
    /// by `prove_by`.
    pub(super) fn admit(&mut self, ends: Ends, prove_by: Instant) -> (u64, Arc<Slot>) {
        let address = ends.1.ip().to_canonical();
        let group = group_of(address);
        let (id, slot) = (self.next, Arc::new(Slot { group: Some(group), ..Slot::default() }));
        self.next += 1;
        let q = self.groups.entry(group).or_default();
        q.push_back((id, ends, slot.clone()));
        let len = q.len();
        self.resize(group, len - 1, len);
        *self.by_address.entry(address).or_default() += 1;
        self.by_ends.insert(ends, slot.clone());
        // Closed and authenticated ones leave the queue as they reach its
        // front; a flood of short connections must not grow it past what
        // is held.
        if self.unproven.len() > 2 * self.total + 1024 {
            self.unproven.retain(|(_, (_, _, s))| {
                !s.released.load(Ordering::Acquire) && !s.authenticated.load(Ordering::Acquire)
            });
        }
        self.unproven.push_back((prove_by, (id, ends, slot.clone())));
        self.total += 1;
        self.count_unproven(Some(group), true);
        (id, slot)
    }

    /// Stops counting connection `id` with `ends` (once: a second call finds nothing).
    pub(super) fn release(&mut self, id: u64, ends: Ends) {
        let peer = ends.1;
        let (address, group) = (peer.ip().to_canonical(), group_of(peer.ip()));
        let Some(q) = self.groups.get_mut(&group) else { return };
        let Ok(at) = q.binary_search_by_key(&id, |e| e.0) else { return };
        let (_, _, slot) = q.remove(at).expect("found");
        slot.released.store(true, Ordering::Release);
        // The waker holds the connection's task (its buffers) in memory.
        drop(slot.waker.take());
        let len = q.len();
        if !slot.authenticated.load(Ordering::Acquire) {
            self.count_unproven(slot.group, false);
        }
        if len == 0 {
            self.groups.remove(&group);
        }
        self.resize(group, len + 1, len);
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        if self.by_ends.get(&ends).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            self.by_ends.remove(&ends);
        }
        self.total -= 1;
    }

    /// Marks the connection with `ends` as having proved a credential.
    #[cfg(test)]
    pub(super) fn authenticated(&mut self, ends: Ends) {
        if let Some(slot) = self.slot(ends).cloned() {
            self.proved(&slot);
        }
    }

    /// Marks `slot`'s connection as having proved a credential (once).
    pub(super) fn proved(&mut self, slot: &Slot) {
        if !slot.authenticated.swap(true, Ordering::AcqRel) && !slot.released.load(Ordering::Acquire) {
            self.count_unproven(slot.group, false);
        }
    }

    /// One more (`up`) or one fewer connection of `group` that proved nothing.
    fn count_unproven(&mut self, group: Option<IpAddr>, up: bool) {
        let Some(group) = group else { return };
        let n = self.unproven_by_group.entry(group).or_default();
        match up {
            true => (*n, self.unproven_held) = (*n + 1, self.unproven_held + 1),
            false => (*n, self.unproven_held) = (n.saturating_sub(1), self.unproven_held.saturating_sub(1)),
        }
        if *n == 0 {
            self.unproven_by_group.remove(&group);
        }
    }

    /// The connection with `ends`, if it is held.
    pub(super) fn slot(&self, ends: Ends) -> Option<&Arc<Slot>> {
        self.by_ends.get(&ends)
    }

    /// Tells the connection's stream, and releases it.
    fn close(&mut self, (id, ends, slot): Entry) {
        slot.closed.store(true, Ordering::Release);
        slot.waker.wake();
        self.release(id, ends);
    }

    /// Whether `entry` still waits to prove something (held, not yet authenticated).
    fn unproven(entry: &Entry) -> bool {
        !entry.2.released.load(Ordering::Acquire) && !entry.2.authenticated.load(Ordering::Acquire)
    }

    /// Whether `entry`'s connection has a call in flight that may still
    /// hold it open at `now`: at most [`BUSY_GRACE`] past its time.
    fn held_open(by: Instant, entry: &Entry, now: Instant) -> bool {
        entry.2.in_flight.load(Ordering::Acquire) > 0 && now < by + BUSY_GRACE
    }

    /// Closes every connection whose time to prove a credential passed
    /// before `now` without one; how many. One with a call in flight
    /// (a join or credential check waiting on the store) keeps its place in
    /// the queue until the call ends or [`BUSY_GRACE`] has passed too.
    pub(super) fn sweep(&mut self, now: Instant) -> usize {
        let (mut closed, mut kept) = (0, Vec::new());
        while let Some(&(by, ref entry)) = self.unproven.front() {
            if by > now {
                break;
            }
            let entry = entry.clone();
            self.unproven.pop_front();
            if !Self::unproven(&entry) {
                continue;
            }
            if Self::held_open(by, &entry, now) {
                kept.push((by, entry));
            } else {
                self.close(entry);
                closed += 1;
            }
        }
        // Back in front, in the order they came.
        for e in kept.into_iter().rev() {
            self.unproven.push_front(e);
        }
        closed
    }

    /// With every slot taken: closes the oldest connection that has not
    /// proved a credential (an outsider's, with as many addresses as there
    /// are slots, would otherwise keep every newcomer out); failing that,
    /// the oldest connection of the group (address, IPv6 /64) that holds
    /// the most, if that is more than `from_group + 1` (what the newcomer's
    /// group would hold), so that one source (or a few) cannot keep every
    /// other out by holding all slots.
    pub(super) fn make_room(&mut self, from_group: usize, now: Instant) -> Option<Evicted> {
        if let Some(evicted) = self.close_oldest_unproven(now) {
            return Some(evicted);
        }
        let (&most, groups) = self.by_size.last_key_value()?;
        if most <= from_group + 1 {
            return None;
        }
        let group = *groups.iter().next()?;
        let entry = self.groups.get(&group)?.front()?.clone();
        let address = entry.1.1.ip().to_canonical();
        self.close(entry);
        Some(Evicted::Biggest(address))
    }
}

impl Held {
    /// With every slot for connections that proved nothing taken: closes
    /// the oldest such connection, with no call in flight, of the group
    /// (address, IPv6 /64) holding the most of them; among groups holding
    /// as many, the oldest of all. The globally oldest was closed at first,
    /// and an outsider reopening its own from one address closed every
    /// newcomer's before its first call could prove anything (a review,
    /// 2026-12-06): now it closes its own.
    pub(super) fn close_unproven_of_biggest(&mut self) -> Option<Evicted> {
        let most = *self.unproven_by_group.values().max()?;
        let candidate = |e: &Entry| Self::unproven(e) && e.2.in_flight.load(Ordering::Acquire) == 0;
        let entry = self
            .unproven_by_group
            .iter()
            .filter(|(_, n)| **n == most)
            .filter_map(|(g, _)| self.groups.get(g)?.iter().find(|e| candidate(e)))
            .min_by_key(|e| e.0)?
            .clone();
        let address = entry.1.1.ip().to_canonical();
        self.close(entry);
        Some(Evicted::Unauthenticated(address))
    }

    /// Closes the oldest connection that has not proved anything and has
    /// no call in flight (those are few: a call holds its connection at
    /// most [`BUSY_GRACE`] past its time): [`Self::make_room`]'s first
    /// choice for a newcomer when every slot is taken (the bound on such
    /// connections alone is [`Self::close_unproven_of_biggest`]'s).
    pub(super) fn close_oldest_unproven(&mut self, now: Instant) -> Option<Evicted> {
        while self.unproven.front().is_some_and(|(_, e)| !Self::unproven(e)) {
            self.unproven.pop_front();
        }
        let at = self.unproven.iter().position(|(by, e)| Self::unproven(e) && !Self::held_open(*by, e, now));
        let (_, entry) = at.and_then(|i| self.unproven.remove(i))?;
        let address = entry.1.1.ip().to_canonical();
        self.close(entry);
        Some(Evicted::Unauthenticated(address))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A connection from `s`:`port` to the coordinator's 192.0.2.254:6783.
    fn peer(s: &str, port: u16) -> Ends {
        ("192.0.2.254:6783".parse().unwrap(), SocketAddr::new(ip(s), port))
    }

    #[test]
    fn connections_are_counted_per_address_and_per_ipv6_64() {
        let group = |s: &str| group_of(ip(s)).to_string();
        assert_eq!(group("192.0.2.7"), "192.0.2.7");
        assert_eq!(group("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(group("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_ne!(group("2001:db8:1:2::9"), group("2001:db8:1:3::9"));
        let (mut h, t) = (Held::default(), Instant::now());
        let a = h.admit(peer("2001:db8:1:2::9", 1), t);
        h.admit(peer("2001:db8:1:2::a", 1), t);
        h.admit(peer("::ffff:192.0.2.7", 1), t);
        assert_eq!((h.held_by_address(&ip("2001:db8:1:2::9")), h.held_by_group(&ip("2001:db8:1:2::ffff"))), (1, 2));
        assert_eq!((h.held_by_address(&ip("192.0.2.7")), h.held_by_group(&ip("192.0.2.7")), h.total), (1, 1, 3));
        h.release(a.0, peer("2001:db8:1:2::9", 1));
        h.release(a.0, peer("2001:db8:1:2::9", 1));
        assert_eq!((h.held_by_group(&ip("2001:db8:1:2::")), h.total), (1, 2), "released once");
    }

    /// Every connection here has proved a credential: with every slot held,
    /// the group holding the most gives up its oldest connection, counted by
    /// /64: one address each from one /64 is one source, not many (a review
    /// found them ranked per address).
    #[test]
    fn room_is_made_from_the_biggest_group_by_ipv6_64() {
        let (mut h, t) = (Held::default(), Instant::now());
        let mut admitted = Vec::new();
        for i in 1..=4 {
            admitted.push(h.admit(peer(&format!("2001:db8:1:2::{i}"), 1), t));
        }
        admitted.push(h.admit(peer("192.0.2.7", 1), t));
        admitted.push(h.admit(peer("192.0.2.7", 2), t));
        for (_, slot) in &admitted {
            slot.authenticated.store(true, Ordering::Release);
        }
        assert_eq!(h.make_room(0, t), Some(Evicted::Biggest(ip("2001:db8:1:2::1"))), "the /64's oldest");
        assert!(admitted[0].1.closed.load(Ordering::Acquire));
        assert!(admitted[1..].iter().all(|e| !e.1.closed.load(Ordering::Acquire)));
        assert_eq!((h.held_by_group(&ip("2001:db8:1:2::1")), h.total), (3, 5));
        // The /64 (3) against a newcomer whose group holds 2: no more than one more.
        assert_eq!(h.make_room(2, t), None);
        assert_eq!(h.make_room(1, t), Some(Evicted::Biggest(ip("2001:db8:1:2::2"))));
        // Then two groups of 2: a newcomer from either gets nothing; from a third, room.
        assert_eq!(h.make_room(1, t), None);
        assert!(h.make_room(0, t).is_some());
        assert_eq!(h.total, 3);
    }

    /// A connection that has not proved a credential goes first, oldest
    /// first, whatever its group; a proof (found by the request's peer
    /// address) keeps it; the sweep closes those past their time only.
    #[test]
    fn unauthenticated_connections_make_room_first_and_are_swept_at_their_time() {
        let (mut h, t) = (Held::default(), Instant::now());
        let s = Duration::from_secs(1);
        let member = h.admit(peer("192.0.2.1", 1), t);
        let member2 = h.admit(peer("192.0.2.1", 2), t);
        let outsiders: Vec<_> = (2..=4).map(|i| h.admit(peer(&format!("192.0.2.{i}"), 9), t + s * i)).collect();
        h.authenticated(peer("192.0.2.1", 1));
        h.authenticated(peer("192.0.2.1", 2));
        h.authenticated(peer("192.0.2.9", 1)); // no such connection: nothing
        // The member's group is the biggest (2), but the outsiders go first.
        assert_eq!(h.unproven_held, 3, "the members' are not counted as unproven");
        assert_eq!(h.make_room(0, t), Some(Evicted::Unauthenticated(ip("192.0.2.2"))));
        assert!(outsiders[0].1.closed.load(Ordering::Acquire));
        // One outsider proves a credential after all: kept.
        h.authenticated(peer("192.0.2.3", 9));
        h.authenticated(peer("192.0.2.3", 9)); // again: counted once
        assert_eq!(h.unproven_held, 1);
        // Nothing is due before its time; at 4 s the one left is.
        assert_eq!(h.sweep(t + s * 3), 0);
        assert_eq!(h.sweep(t + s * 4), 1);
        assert!(outsiders[2].1.closed.load(Ordering::Acquire) && !outsiders[1].1.closed.load(Ordering::Acquire));
        assert!(!member.1.closed.load(Ordering::Acquire) && !member2.1.closed.load(Ordering::Acquire));
        assert_eq!((h.total, h.sweep(t + s * 100), h.unproven_held), (3, 0, 0));
        // None unproven left: the biggest group gives way as before.
        assert_eq!(h.make_room(0, t), Some(Evicted::Biggest(ip("192.0.2.1"))));
        // A closed connection's peer address taken by a new one: the new one is the one marked.
        h.release(outsiders[1].0, peer("192.0.2.3", 9));
        let again = h.admit(peer("192.0.2.3", 9), t);
        h.authenticated(peer("192.0.2.3", 9));
        assert!(again.1.authenticated.load(Ordering::Acquire));
        // Released proven or not, and the one that closed to make room: none unproven.
        for (id, ends) in [(member2.0, peer("192.0.2.1", 2)), (again.0, peer("192.0.2.3", 9))] {
            h.release(id, ends);
        }
        assert_eq!((h.total, h.unproven_held), (0, 0));
        assert!(h.unproven.len() <= 1, "authenticated and closed ones are dropped as they are met");
    }

    /// Past the bound for connections that proved nothing, the group holding
    /// the most of them gives one up: an outsider's own, not a newcomer's
    /// from elsewhere; among groups holding as many, the oldest of all; one
    /// with a call in flight is passed over.
    #[test]
    fn unproven_connections_past_the_bound_come_from_the_biggest_group() {
        let (mut h, t) = (Held::default(), Instant::now());
        let lone = h.admit(peer("192.0.2.9", 1), t);
        let outsider: Vec<_> = (1..=3).map(|p| h.admit(peer("192.0.2.2", p), t)).collect();
        assert_eq!(h.unproven_held, 4);
        outsider[0].1.in_flight.store(1, Ordering::Release);
        assert_eq!(h.close_unproven_of_biggest(), Some(Evicted::Unauthenticated(ip("192.0.2.2"))));
        assert!(outsider[1].1.closed.load(Ordering::Acquire), "its oldest without a call in flight");
        assert_eq!(h.close_unproven_of_biggest(), Some(Evicted::Unauthenticated(ip("192.0.2.2"))));
        assert!(outsider[2].1.closed.load(Ordering::Acquire) && !lone.1.closed.load(Ordering::Acquire));
        // One each now: the oldest of all, the lone one (the outsider's has a call in flight).
        assert_eq!(h.close_unproven_of_biggest(), Some(Evicted::Unauthenticated(ip("192.0.2.9"))));
        assert_eq!(h.close_unproven_of_biggest(), None, "only one with a call in flight is left");
        h.proved(&outsider[0].1.clone());
        assert_eq!((h.unproven_held, h.unproven_by_group.len(), h.total), (0, 0, 1));
    }

    /// A connection with a call in flight (a join behind a busy store) is
    /// not closed at its time but once the call is answered.
    #[test]
    fn a_call_in_flight_holds_the_sweep_off_for_a_while() {
        let (mut h, t) = (Held::default(), Instant::now());
        let s = Duration::from_secs(1);
        let (_, busy) = h.admit(peer("192.0.2.1", 1), t);
        let (_, idle) = h.admit(peer("192.0.2.2", 1), t + s);
        let (_, stuck) = h.admit(peer("192.0.2.3", 1), t + s * 2);
        busy.in_flight.fetch_add(1, Ordering::AcqRel);
        stuck.in_flight.fetch_add(1, Ordering::AcqRel);
        // The idle one behind the busy one is closed at its time.
        assert_eq!(h.sweep(t + s * 5), 1);
        assert!(idle.closed.load(Ordering::Acquire) && !busy.closed.load(Ordering::Acquire));
        // With every slot held, a newcomer closes neither busy one while
        // their calls may hold them open.
        assert_eq!(h.make_room(0, t + s * 5), None);
        // The busy one's call ends: closed at the next sweep.
        busy.in_flight.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(h.sweep(t + s * 6), 1);
        assert!(busy.closed.load(Ordering::Acquire));
        // A call never answered holds its connection BUSY_GRACE past its time, no longer.
        assert_eq!(h.sweep(t + s * 2 + BUSY_GRACE - s), 0);
        assert_eq!(h.sweep(t + s * 2 + BUSY_GRACE), 1);
        assert!(stuck.closed.load(Ordering::Acquire));
    }

    /// One peer address and port to two local addresses: two connections,
    /// each marked and closed on its own (a review found the second hiding
    /// the first from both the sweep and eviction).
    #[test]
    fn one_peer_port_to_two_local_addresses_is_two_connections() {
        let (mut h, t) = (Held::default(), Instant::now());
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let (one, two) = (("192.0.2.254:6783".parse().unwrap(), from), ("203.0.113.254:6783".parse().unwrap(), from));
        let first = h.admit(one, t);
        let second = h.admit(two, t);
        h.authenticated(two);
        assert!(!first.1.authenticated.load(Ordering::Acquire) && second.1.authenticated.load(Ordering::Acquire));
        assert_eq!(h.sweep(t), 1);
        assert!(first.1.closed.load(Ordering::Acquire) && !second.1.closed.load(Ordering::Acquire));
    }

    /// A flood of connections that close at once leaves the queue no longer
    /// than what is held allows, and no waker (the task's memory) behind.
    #[test]
    fn short_connections_do_not_pile_up_in_the_queue() {
        let (mut h, t) = (Held::default(), Instant::now());
        let kept = h.admit(peer("192.0.2.1", 1), t);
        for i in 0..10_000u16 {
            let (id, slot) = h.admit(peer("192.0.2.2", i), t);
            slot.waker.register(futures::task::noop_waker_ref());
            h.release(id, peer("192.0.2.2", i));
            assert!(slot.waker.take().is_none(), "released with its waker");
        }
        assert!(h.unproven.len() <= 1024 + 3, "{}", h.unproven.len());
        assert_eq!(h.make_room(0, t), Some(Evicted::Unauthenticated(ip("192.0.2.1"))));
        assert!(kept.1.closed.load(Ordering::Acquire));
    }
}
