use super::handshake::{b2s_hash, b2s_keyed_mac_16, b2s_keyed_mac_16_2, b2s_mac_24};
use crate::noise::handshake::{LABEL_COOKIE, LABEL_MAC1};
use crate::noise::{HandshakeInit, HandshakeResponse, Packet, Tunn, TunnResult, WireGuardError};

#[cfg(feature = "mock-instant")]
use mock_instant::Instant;
use portable_atomic::{AtomicU64, Ordering};
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
use std::convert::TryFrom;
use std::net::IpAddr;

#[cfg(not(feature = "mock-instant"))]
use crate::sleepyinstant::Instant;

use aead::generic_array::GenericArray;
use aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305};
use parking_lot::Mutex;
use rand_core::{OsRng, RngCore};
use ring::constant_time::verify_slices_are_equal;

const COOKIE_REFRESH: u64 = 128; // Use 128 and not 120 so the compiler can optimize out the division
const COOKIE_SIZE: usize = 16;
const COOKIE_NONCE_SIZE: usize = 24;

/// How often should reset count in seconds
const RESET_PERIOD: u64 = 1;

type Cookie = [u8; COOKIE_SIZE];

// weave: while under load, each source may send this many handshake packets a
// second once its mac2 checked out, and this many at once; what it sends
// beyond that is dropped, no cookie reply and no DH (the kernel's
// ratelimiter.c: PACKETS_PER_SECOND, PACKETS_BURSTABLE). A source is an IPv4
// address or an IPv6 /64.
const SOURCE_PACKETS_PER_SECOND: u64 = 20;
const SOURCE_PACKETS_BURSTABLE: u64 = 5;
const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// What one packet costs a source, in nanoseconds of its budget.
const PACKET_COST: u64 = NANOS_PER_SECOND / SOURCE_PACKETS_PER_SECOND;
/// The most budget a source holds: its burst.
const TOKEN_MAX: u64 = PACKET_COST * SOURCE_PACKETS_BURSTABLE;
/// The most sources tracked at once; past it a new source's packets are
/// dropped until the reset tick prunes sources idle for a second (by then
/// their buckets are full, so forgetting them changes nothing).
const MAX_SOURCES: usize = 4096;
/// weave: while under load, cookie replies to sources that are not a peer's
/// endpoint: at most this many a second in all (each also spends its
/// source's share of a bucket of its own, as above). A member knows every
/// host's public key, so it can make initiations with a valid mac1 from as
/// many addresses as it likes: each got a cookie reply (a BLAKE2s, an
/// XChaCha20-Poly1305 seal and a send on the thread that also moves the
/// data), and at ~70,000 a second from one address the tunnels through that
/// host lost 40 % of their packets (found by a review, 2026-12-04). The
/// peers' endpoints have a total of their own (below).
const COOKIE_REPLIES_PER_SECOND: u64 = 1_000;
/// weave: while under load, cookie replies to the peers' endpoints (trusted
/// sources): at most this many a second to each source, and
/// [`TRUSTED_COOKIE_REPLIES_PER_SECOND`] to all of them together. Someone who
/// spoofs a peer's address on the underlay (and knows the host's public
/// key) emptied that peer's 20 a second with forged initiations, and the
/// peer, restarted, got no cookie reply to its own and no tunnel for as long
/// as the flood went on (2,000 a second did it; found by a review,
/// 2026-12-05): such a flood must now pass this many to cost the peer more
/// than a retry. And one source (a member at its own endpoint, an outsider
/// in a peer's IPv6 /64) takes only its share of the total: one shared
/// total without shares let it take every peer's (found by the next review).
const TRUSTED_SOURCE_COOKIE_REPLIES_PER_SECOND: u64 = 5_000;
/// weave: see [`TRUSTED_SOURCE_COOKIE_REPLIES_PER_SECOND`]. At most this many
/// seals and sends a second (~5 % of a core), where the kernel's WireGuard
/// answers every one.
const TRUSTED_COOKIE_REPLIES_PER_SECOND: u64 = 20_000;

/// weave: handshake messages remembered per reset period (a second) while
/// under load, to drop their repeats; past this many, new ones are not
/// remembered (each was answered or let through: bounded by the limits above).
const MAX_SEEN: usize = 1 << 17;

/// A source of handshake packets, as the per-source bucket keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
}

impl Source {
    fn of(addr: IpAddr) -> Source {
        // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6.
        match addr.to_canonical() {
            IpAddr::V4(a) => Source::V4(a.octets()),
            IpAddr::V6(a) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&a.octets()[..8]);
                Source::V6(prefix)
            }
        }
    }
}

/// A source's token bucket: its budget in nanoseconds, and when it was last
/// charged (nanoseconds since the limiter started).
struct Bucket {
    tokens: u64,
    last: u64,
}

/// There are two places where WireGuard requires "randomness" for cookies
/// * The 24 byte nonce in the cookie massage - here the only goal is to avoid nonce reuse
/// * A secret value that changes every two minutes
/// Because the main goal of the cookie is simply for a party to prove ownership of an IP address
/// we can relax the randomness definition a bit, in order to avoid locking, because using less
/// resources is the main goal of any DoS prevention mechanism.
/// In order to avoid locking and calls to rand we derive pseudo random values using the AEAD and
/// some counters.
pub struct RateLimiter {
    /// The key we use to derive the nonce
    nonce_key: [u8; 32],
    /// The key we use to derive the cookie
    secret_key: [u8; 16],
    start_time: Instant,
    /// A single 64 bit counter (should suffice for many years)
    nonce_ctr: AtomicU64,
    mac1_key: [u8; 32],
    cookie_key: Key,
    limit: u64,
    /// The counter since last reset
    count: AtomicU64,
    /// The time last reset was performed on this rate limiter
    last_reset: Mutex<Instant>,
    /// weave: the per-source buckets, used while under load (at most
    /// `MAX_SOURCES`, plus the trusted sources').
    sources: Mutex<HashMap<Source, Bucket>>,
    /// weave: the sources the peers are known at (`set_trusted`): a new one
    /// gets a bucket even while the table is full.
    trusted: Mutex<HashSet<Source>>,
    /// weave: the per-source buckets of cookie replies (to sources that are
    /// not trusted), and how many went out since the last reset.
    cookie_sources: Mutex<HashMap<Source, Bucket>>,
    cookies: AtomicU64,
    /// weave: cookie replies to trusted sources since the last reset, in
    /// all and per source (only trusted sources: bounded by the peers).
    trusted_cookies: AtomicU64,
    trusted_cookies_by_source: Mutex<HashMap<Source, u64>>,
    /// weave: the mac1 of each handshake message answered (a cookie reply)
    /// or let through while under load since the last reset. A repeat is a
    /// replay (every initiation has a fresh ephemeral key, and so a fresh
    /// mac1) and gets nothing: an outsider replaying one captured initiation
    /// from a peer's address at 15,000 a second spent that address's 5,000
    /// cookie replies early in every second, and the restarted peer's own
    /// initiation mostly found none left (its tunnel back after 13-18 s, not
    /// 2; found by a review, 2026-12-05).
    seen: Mutex<HashSet<(Source, [u8; 16])>>,
}

impl RateLimiter {
    pub fn new(public_key: &crate::x25519::PublicKey, limit: u64) -> Self {
        let mut secret_key = [0u8; 16];
        OsRng.fill_bytes(&mut secret_key);
        RateLimiter {
            nonce_key: Self::rand_bytes(),
            secret_key,
            start_time: Instant::now(),
            nonce_ctr: AtomicU64::new(0),
            mac1_key: b2s_hash(LABEL_MAC1, public_key.as_bytes()),
            cookie_key: b2s_hash(LABEL_COOKIE, public_key.as_bytes()).into(),
            limit,
            count: AtomicU64::new(0),
            last_reset: Mutex::new(Instant::now()),
            sources: Mutex::new(HashMap::new()),
            trusted: Mutex::new(HashSet::new()),
            cookie_sources: Mutex::new(HashMap::new()),
            cookies: AtomicU64::new(0),
            trusted_cookies: AtomicU64::new(0),
            trusted_cookies_by_source: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// weave: the addresses the peers are known at (their endpoints). While
    /// the source table is full a new source is dropped, so an outsider who
    /// can answer cookie replies at 4,096 addresses (an IPv6 /52) and keeps
    /// each busy would otherwise lock every peer out of its re-handshakes,
    /// and the tunnels would end as their sessions expire. A trusted source
    /// still gets only its own bucket's share.
    pub fn set_trusted(&self, addrs: impl IntoIterator<Item = IpAddr>) {
        *self.trusted.lock() = addrs.into_iter().map(Source::of).collect();
    }

    fn rand_bytes() -> [u8; 32] {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        key
    }

    /// Reset packet count (ideally should be called with a period of 1 second)
    pub fn reset_count(&self) {
        // The rate limiter is not very accurate, but at the scale we care about it doesn't matter much
        let current_time = Instant::now();
        let mut last_reset_time = self.last_reset.lock();
        if current_time.duration_since(*last_reset_time).as_secs() >= RESET_PERIOD {
            self.count.store(0, Ordering::SeqCst);
            self.cookies.store(0, Ordering::SeqCst);
            self.trusted_cookies.store(0, Ordering::SeqCst);
            self.trusted_cookies_by_source.lock().clear();
            self.seen.lock().clear();
            *last_reset_time = current_time;
            drop(last_reset_time);
            self.prune_sources(self.nanos());
        }
    }

    /// weave: what the reset tick does to the cookie replies' budget, now
    /// (tests spread a flood over several seconds with it).
    pub fn reset_cookies(&self) {
        self.cookies.store(0, Ordering::SeqCst);
        self.trusted_cookies.store(0, Ordering::SeqCst);
        self.trusted_cookies_by_source.lock().clear();
        self.seen.lock().clear();
    }

    /// weave: whether a handshake message of this `mac1` from `addr`'s
    /// source was answered or let through since the last reset (a replay).
    /// Per source: a copy sent first from another address must not make the
    /// real one a repeat.
    fn seen_before(&self, addr: IpAddr, mac1: &[u8]) -> bool {
        <[u8; 16]>::try_from(mac1).is_ok_and(|m| self.seen.lock().contains(&(Source::of(addr), m)))
    }

    /// weave: remembers `mac1` from `addr`'s source as answered or let through.
    fn remember(&self, addr: IpAddr, mac1: &[u8]) {
        let mut seen = self.seen.lock();
        if let (true, Ok(m)) = (seen.len() < MAX_SEEN, <[u8; 16]>::try_from(mac1)) {
            seen.insert((Source::of(addr), m));
        }
    }

    /// Nanoseconds since the limiter started: the per-source buckets' clock.
    fn nanos(&self) -> u64 {
        Instant::now().duration_since(self.start_time).as_nanos() as u64
    }

    /// Charges `addr`'s source one packet at `now`; false once it used its
    /// share, or when it is new and the table is full.
    fn source_allowed(&self, addr: IpAddr, now: u64) -> bool {
        self.charge(&self.sources, MAX_SOURCES, Source::of(addr), now)
    }

    /// weave: may an initiation from `addr` without a valid mac2 have a
    /// cookie reply? A peer's endpoint (trusted): within its share,
    /// [`TRUSTED_SOURCE_COOKIE_REPLIES_PER_SECOND`] (not a bucket of 20 a
    /// spoofer would empty), and the total for all of them. Any other
    /// source: within its own bucket and [`COOKIE_REPLIES_PER_SECOND`] for all.
    fn cookie_allowed(&self, addr: IpAddr, now: u64) -> bool {
        let source = Source::of(addr);
        if self.trusted.lock().contains(&source) {
            let mut by_source = self.trusted_cookies_by_source.lock();
            let sent = by_source.entry(source).or_insert(0);
            if *sent >= TRUSTED_SOURCE_COOKIE_REPLIES_PER_SECOND
                || self.trusted_cookies.fetch_add(1, Ordering::Relaxed) >= TRUSTED_COOKIE_REPLIES_PER_SECOND
            {
                return false;
            }
            *sent += 1;
            return true;
        }
        // Twice the table: a source that proves its address (mac2) after
        // its cookie reply is in both.
        self.charge(&self.cookie_sources, 2 * MAX_SOURCES, source, now)
            && self.cookies.fetch_add(1, Ordering::Relaxed) < COOKIE_REPLIES_PER_SECOND
    }

    fn charge(&self, table: &Mutex<HashMap<Source, Bucket>>, max: usize, source: Source, now: u64) -> bool {
        let mut sources = table.lock();
        let full = sources.len() >= max;
        match sources.entry(source) {
            Entry::Occupied(mut entry) => {
                let bucket = entry.get_mut();
                let tokens = bucket
                    .tokens
                    .saturating_add(now.saturating_sub(bucket.last))
                    .min(TOKEN_MAX);
                bucket.last = bucket.last.max(now);
                let allowed = tokens >= PACKET_COST;
                bucket.tokens = if allowed {
                    tokens - PACKET_COST
                } else {
                    tokens
                };
                allowed
            }
            Entry::Vacant(entry) if full && !self.trusted.lock().contains(entry.key()) => false,
            Entry::Vacant(entry) => {
                entry.insert(Bucket {
                    tokens: TOKEN_MAX - PACKET_COST,
                    last: now,
                });
                true
            }
        }
    }

    /// Forgets the sources idle for a second or more.
    fn prune_sources(&self, now: u64) {
        for table in [&self.sources, &self.cookie_sources] {
            table
                .lock()
                .retain(|_, bucket| now.saturating_sub(bucket.last) < NANOS_PER_SECOND);
        }
    }

    /// Compute the correct cookie value based on the current secret value and the source IP
    fn current_cookie(&self, addr: IpAddr) -> Cookie {
        let mut addr_bytes = [0u8; 16];

        match addr {
            IpAddr::V4(a) => addr_bytes[..4].copy_from_slice(&a.octets()[..]),
            IpAddr::V6(a) => addr_bytes[..].copy_from_slice(&a.octets()[..]),
        }

        // The current cookie for a given IP is the MAC(responder.changing_secret_every_two_minutes, initiator.ip_address)
        // First we derive the secret from the current time, the value of cur_counter would change with time.
        let cur_counter = Instant::now().duration_since(self.start_time).as_secs() / COOKIE_REFRESH;

        // Next we derive the cookie
        b2s_keyed_mac_16_2(&self.secret_key, &cur_counter.to_le_bytes(), &addr_bytes)
    }

    fn nonce(&self) -> [u8; COOKIE_NONCE_SIZE] {
        let ctr = self.nonce_ctr.fetch_add(1, Ordering::Relaxed);

        b2s_mac_24(&self.nonce_key, &ctr.to_le_bytes())
    }

    fn is_under_load(&self) -> bool {
        self.count.fetch_add(1, Ordering::SeqCst) >= self.limit
    }

    pub(crate) fn format_cookie_reply<'a>(
        &self,
        idx: u32,
        cookie: Cookie,
        mac1: &[u8],
        dst: &'a mut [u8],
    ) -> Result<&'a mut [u8], WireGuardError> {
        if dst.len() < super::COOKIE_REPLY_SZ {
            return Err(WireGuardError::DestinationBufferTooSmall);
        }

        let (message_type, rest) = dst.split_at_mut(4);
        let (receiver_index, rest) = rest.split_at_mut(4);
        let (nonce, rest) = rest.split_at_mut(24);
        let (encrypted_cookie, _) = rest.split_at_mut(16 + 16);

        // msg.message_type = 3
        // msg.reserved_zero = { 0, 0, 0 }
        message_type.copy_from_slice(&super::COOKIE_REPLY.to_le_bytes());
        // msg.receiver_index = little_endian(initiator.sender_index)
        receiver_index.copy_from_slice(&idx.to_le_bytes());
        nonce.copy_from_slice(&self.nonce()[..]);

        let cipher = XChaCha20Poly1305::new(&self.cookie_key);

        let iv = GenericArray::from_slice(nonce);

        encrypted_cookie[..16].copy_from_slice(&cookie);
        let tag = cipher
            .encrypt_in_place_detached(iv, mac1, &mut encrypted_cookie[..16])
            .map_err(|_| WireGuardError::DestinationBufferTooSmall)?;

        encrypted_cookie[16..].copy_from_slice(&tag);

        Ok(&mut dst[..super::COOKIE_REPLY_SZ])
    }

    /// Verify the MAC fields on the datagram, and apply rate limiting if needed
    pub fn verify_packet<'a, 'b>(
        &self,
        src_addr: Option<IpAddr>,
        src: &'a [u8],
        dst: &'b mut [u8],
    ) -> Result<Packet<'a>, TunnResult<'b>> {
        let packet = Tunn::parse_incoming_packet(src)?;

        // Verify and rate limit handshake messages only
        if let Packet::HandshakeInit(HandshakeInit { sender_idx, .. })
        | Packet::HandshakeResponse(HandshakeResponse { sender_idx, .. }) = packet
        {
            let (msg, macs) = src.split_at(src.len() - 32);
            let (mac1, mac2) = macs.split_at(16);

            let computed_mac1 = b2s_keyed_mac_16(&self.mac1_key, msg);
            verify_slices_are_equal(&computed_mac1[..16], mac1)
                .map_err(|_| TunnResult::Err(WireGuardError::InvalidMac))?;

            if self.is_under_load() {
                let addr = match src_addr {
                    None => return Err(TunnResult::Err(WireGuardError::UnderLoad)),
                    Some(addr) => addr,
                };
                // weave: a replay of one answered or let through this second.
                if self.seen_before(addr, mac1) {
                    return Err(TunnResult::Err(WireGuardError::UnderLoad));
                }

                // Only given an address can we validate mac2
                let cookie = self.current_cookie(addr);
                let computed_mac2 = b2s_keyed_mac_16_2(&cookie, msg, mac1);

                if verify_slices_are_equal(&computed_mac2[..16], mac2).is_err() {
                    if !self.cookie_allowed(addr, self.nanos()) {
                        return Err(TunnResult::Err(WireGuardError::UnderLoad));
                    }
                    let cookie_packet = self
                        .format_cookie_reply(sender_idx, cookie, mac1, dst)
                        .map_err(TunnResult::Err)?;
                    self.remember(addr, mac1);
                    return Err(TunnResult::WriteToNetwork(cookie_packet));
                }

                // weave: mac2 showed the sender receives at `addr`; a member
                // with a cookie still gets only its source's share.
                if !self.source_allowed(addr, self.nanos()) {
                    return Err(TunnResult::Err(WireGuardError::UnderLoad));
                }
                self.remember(addr, mac1);
            }
        }

        Ok(packet)
    }
}

// weave: the per-source buckets.
#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u64) -> RateLimiter {
        let secret = crate::x25519::StaticSecret::from([7u8; 32]);
        RateLimiter::new(&crate::x25519::PublicKey::from(&secret), limit)
    }

    /// A handshake initiation from `addr` whose mac1 and mac2 (the cookie
    /// `limiter` gives `addr`) check out: what a member sends once it
    /// answered a cookie reply.
    fn initiation(limiter: &RateLimiter, addr: IpAddr) -> Vec<u8> {
        // Each one of its own (a fresh sender index), as a real initiator's.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut packet = vec![0u8; super::super::HANDSHAKE_INIT_SZ];
        packet[0] = super::super::HANDSHAKE_INIT as u8;
        packet[4..12].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let n = packet.len();
        let mac1 = b2s_keyed_mac_16(&limiter.mac1_key, &packet[..n - 32]);
        packet[n - 32..n - 16].copy_from_slice(&mac1);
        let mac2 = b2s_keyed_mac_16_2(&limiter.current_cookie(addr), &packet[..n - 32], &mac1);
        packet[n - 16..].copy_from_slice(&mac2);
        packet
    }

    fn passes(limiter: &RateLimiter, addr: IpAddr, packet: &[u8]) -> bool {
        let mut dst = [0u8; 64];
        match limiter.verify_packet(Some(addr), packet, &mut dst) {
            Ok(_) => true,
            Err(TunnResult::Err(WireGuardError::UnderLoad)) => false,
            Err(TunnResult::WriteToNetwork(_)) => {
                panic!("the packet's mac2 is valid: no cookie reply")
            }
            Err(_) => panic!("unexpected result"),
        }
    }

    #[test]
    fn under_load_one_source_with_a_valid_mac2_gets_its_burst_and_rate_and_others_still_pass() {
        // Limit 0: always under load.
        let limiter = limiter(0);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let start = std::time::Instant::now();
        let mut passed = 0;
        for i in 0..1000 {
            passed += passes(&limiter, flooder, &initiation(&limiter, flooder)) as u64;
            // Within its own burst: served however hard the flooder floods.
            if i % 200 == 100 {
                assert!(
                    passes(&limiter, other, &initiation(&limiter, other)),
                    "a second source was locked out at {}",
                    i
                );
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let most =
            SOURCE_PACKETS_BURSTABLE + (SOURCE_PACKETS_PER_SECOND as f64 * elapsed).ceil() as u64;
        assert!(
            passed >= SOURCE_PACKETS_BURSTABLE,
            "{}: the burst passes",
            passed
        );
        assert!(
            passed <= most,
            "{} of 1000 passed in {:.3} s (at most {})",
            passed,
            elapsed,
            most
        );
    }

    #[test]
    fn a_source_is_charged_its_burst_then_its_rate() {
        let limiter = limiter(0);
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = |now| {
            (0..100)
                .filter(|_| limiter.source_allowed(addr, now))
                .count() as u64
        };
        assert_eq!(allowed(0), SOURCE_PACKETS_BURSTABLE);
        assert_eq!(allowed(PACKET_COST / 2), 0);
        assert_eq!(
            allowed(PACKET_COST),
            1,
            "one packet's worth of time: one packet"
        );
        assert_eq!(
            allowed(PACKET_COST + NANOS_PER_SECOND),
            SOURCE_PACKETS_BURSTABLE,
            "never more than the burst"
        );
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let limiter = limiter(0);
        let same = |a: &str, b: &str| {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            Source::of(a) == Source::of(b)
        };
        assert!(same("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"));
        assert!(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
        assert!(
            same("::ffff:192.0.2.1", "192.0.2.1"),
            "IPv4-mapped is the IPv4 address"
        );
        assert!(!same("192.0.2.1", "192.0.2.2"));
        // Two addresses of one /64 share a bucket.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let allowed = (0..10)
            .filter(|i| limiter.source_allowed(if i % 2 == 0 { a } else { b }, 0))
            .count() as u64;
        assert_eq!(allowed, SOURCE_PACKETS_BURSTABLE);
    }

    #[test]
    fn the_source_table_stays_bounded_and_is_pruned_of_idle_sources() {
        let limiter = limiter(0);
        let addr = |i: usize| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let extra = 100;
        let passed = (0..MAX_SOURCES + extra)
            .filter(|&i| passes(&limiter, addr(i), &initiation(&limiter, addr(i))))
            .count();
        assert_eq!(
            limiter.sources.lock().len(),
            MAX_SOURCES,
            "the table did not grow past its cap"
        );
        assert_eq!(
            passed, MAX_SOURCES,
            "new sources are dropped while it is full"
        );
        // Known sources are still served.
        assert!(passes(&limiter, addr(0), &initiation(&limiter, addr(0))));
        // A peer's known address is served even now (an outsider holding
        // every slot does not lock the peers out of their re-handshakes),
        // and only to its own bucket's share.
        let peer: IpAddr = "2001:db8:77::1".parse().unwrap();
        assert!(!passes(&limiter, peer, &initiation(&limiter, peer)), "not trusted yet");
        limiter.set_trusted([peer, "192.0.2.9".parse().unwrap()]);
        let served = (0..10)
            .filter(|_| passes(&limiter, peer, &initiation(&limiter, peer)))
            .count() as u64;
        assert_eq!(served, SOURCE_PACKETS_BURSTABLE);
        let stranger: IpAddr = "2001:db8:78::1".parse().unwrap();
        assert!(!passes(&limiter, stranger, &initiation(&limiter, stranger)));
        // A second later every one of them is idle: pruned, and new sources pass again.
        limiter.prune_sources(limiter.nanos() + NANOS_PER_SECOND);
        assert!(limiter.sources.lock().is_empty());
        let late = addr(MAX_SOURCES + extra);
        assert!(passes(&limiter, late, &initiation(&limiter, late)));
    }

    /// weave: an initiation without a valid mac2 (what a restarted peer
    /// sends first) from `addr`, of its own.
    fn first_initiation(limiter: &RateLimiter) -> Vec<u8> {
        let mut packet = initiation(limiter, "192.0.2.250".parse().unwrap());
        let n = packet.len();
        packet[n - 16..].fill(0);
        packet
    }

    /// Whether `packet` from `addr` gets a cookie reply.
    fn cookie_for(limiter: &RateLimiter, addr: IpAddr, packet: &[u8]) -> bool {
        let mut dst = [0u8; 64];
        match limiter.verify_packet(Some(addr), packet, &mut dst) {
            Err(TunnResult::WriteToNetwork(_)) => true,
            Err(TunnResult::Err(WireGuardError::UnderLoad)) => false,
            _ => panic!("unexpected result"),
        }
    }

    #[test]
    fn a_replayed_handshake_message_is_answered_once_a_second_and_the_peers_own_still_is() {
        let limiter = limiter(0);
        let peer: IpAddr = "192.0.2.12".parse().unwrap();
        limiter.set_trusted([peer]);
        // One captured initiation replayed from the peer's address, more
        // often than the peer's share of cookie replies: answered once.
        let captured = first_initiation(&limiter);
        let answered = (0..2 * TRUSTED_SOURCE_COOKIE_REPLIES_PER_SECOND)
            .filter(|_| cookie_for(&limiter, peer, &captured))
            .count();
        assert_eq!(answered, 1);
        // The peer's own (a fresh ephemeral key: another message) still is.
        assert!(cookie_for(&limiter, peer, &first_initiation(&limiter)));
        // With the cookie, its next initiation passes; a replay of that one does not.
        let proven = initiation(&limiter, peer);
        assert!(passes(&limiter, peer, &proven));
        assert!(!passes(&limiter, peer, &proven));
        // A copy sent first from another address does not make the peer's
        // own a repeat.
        let fresh = first_initiation(&limiter);
        assert!(cookie_for(&limiter, "192.0.2.99".parse().unwrap(), &fresh));
        assert!(cookie_for(&limiter, peer, &fresh));
        // The next second the replay is answered once again.
        limiter.reset_cookies();
        assert!(cookie_for(&limiter, peer, &captured));
        assert!(!cookie_for(&limiter, peer, &captured));
    }

    /// Lets `d` pass on the clock the code under test reads.
    fn sleep(d: std::time::Duration) {
        #[cfg(feature = "mock-instant")]
        mock_instant::MockClock::advance(d);
        #[cfg(not(feature = "mock-instant"))]
        std::thread::sleep(d);
    }

    #[test]
    fn the_reset_tick_prunes_the_source_table() {
        let limiter = limiter(0);
        let addr: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limiter.source_allowed(addr, limiter.nanos()));
        limiter.reset_count();
        assert_eq!(limiter.sources.lock().len(), 1, "not idle for a second yet");
        sleep(std::time::Duration::from_millis(1050));
        limiter.reset_count();
        assert!(limiter.sources.lock().is_empty());
    }
}
