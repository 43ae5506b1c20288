//! Layer 5 — the Kademlia DHT as a sans-IO state machine.
//!
//! [`Dht`] takes inbound requests ([`Dht::handle_request`]), responses
//! ([`Dht::on_response`]) and time ([`Dht::tick`]); it returns
//! [`Action`]s: requests to send and finished queries. The tokio driver in
//! `peerlink-net` and the simulator in `peerlink-sim` run this same code.
//!
//! - 256-bit keys (BLAKE3), k-buckets with least-recently-seen eviction
//!   checked by a ping, per-subnet caps per bucket ([`routing`]).
//! - Only peers that answered one of our requests enter the table; a peer
//!   that asks us something is pinged before it is added.
//! - Lookups keep `alpha` requests in flight and replace slow peers
//!   ([`lookup`]).
//! - Signed records with sequence numbers and expiry, stored on the k
//!   closest, republished, and repaired by GETs that find an older copy;
//!   provider records ([`record`]).
//! - Per-peer rate limits on writes; responses are filtered (more than k
//!   contacts, duplicates, the responder itself, unusable addresses) and
//!   the sender reported with [`Action::Misbehaved`].

pub mod key;
pub mod lookup;
mod quota;
pub mod record;
pub mod routing;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use key::{Distance, Key};
pub use lookup::Lookup;
pub use record::{MemoryStore, ProviderRecord, Record, RecordError, RecordStore, StoreError};
pub use routing::{addr_usable, Insert, RoutingTable};
pub use wire::{Contact, ErrorCode, Request, RequestBody, Response, WireError};

use crate::prefix::Prefix;
use crate::rng::Rng;
use crate::{Keypair, PeerId, TransportAddr};

/// DHT settings. The defaults suit a public network; tests and the
/// simulator shorten the intervals.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Bucket size and replication factor.
    pub k: usize,
    /// Requests in flight per lookup.
    pub alpha: usize,
    /// Requests in flight per lookup while joining (the self-lookup and
    /// the bucket refreshes that follow): a joining node has nothing else
    /// to do, and asking every contact at once fills its table in a few
    /// round trips instead of k/alpha rounds.
    pub bootstrap_alpha: usize,
    /// Extra peers beyond `k` that must answer before a lookup ends.
    pub lookup_extra: usize,
    /// A request unanswered this long stops holding a lookup slot.
    pub slow_after: Duration,
    /// A request unanswered this long has failed.
    pub request_timeout: Duration,
    /// A query returns what it has after this long.
    pub query_timeout: Duration,
    /// A GET finishes once this many peers (our own store counts as one)
    /// hold one publisher's record, and returns the publisher most of them
    /// hold, at the newest sequence seen: one lying peer near a key cannot
    /// pick a name's owner or serve an old sequence. It costs about one
    /// round trip over the first answer ([`Dht::get_first`], which the
    /// fast path and the DHT latency target use). Default 3.
    pub get_quorum: usize,
    pub max_record_size: usize,
    pub record_ttl: Duration,
    /// Records expiring later than this from now are refused.
    pub max_record_ttl: Duration,
    pub provider_ttl: Duration,
    /// Holders re-store their records on the current k closest this often;
    /// publishers re-sign their own before half their lifetime has passed.
    pub republish_interval: Duration,
    /// After a start on a store that holds records this node signed or
    /// keys it provides, they are re-signed (when due) and re-stored this
    /// soon, once the node has had time to join, instead of a republish
    /// interval later.
    pub resume_after: Duration,
    pub refresh_interval: Duration,
    /// Contacts from one /24 (IPv4) or /48 (IPv6) per bucket; loopback is
    /// exempt.
    pub max_per_subnet_per_bucket: usize,
    /// Writes (PUT, ADD_PROVIDER) per second per peer, and the burst.
    /// Beyond them a write is answered "slow down, retry after" with a
    /// slot of its own ([`Response::SlowDown`]); the writer comes back
    /// then, and paces its next writes to that peer.
    pub writes_per_sec: f64,
    pub write_burst: f64,
    /// Writes already on their way when a peer was first told to slow
    /// down are not held against it; after this long, `write_burst` more
    /// refused writes in one episode mean it ignores the answer
    /// ([`Action::Misbehaved`], "write_flood").
    pub slowdown_grace: Duration,
    /// What others may store with us ([`quota`] has the policy): a key is
    /// taken only if fewer than this many peers we know are closer to it
    /// than we are (default 3k: slack for a writer whose lookup saw less of
    /// the network than we know)...
    pub store_radius: usize,
    /// ...held records' bytes in total...
    pub max_store_bytes: usize,
    /// ...signed by one publisher...
    pub max_records_per_publisher: usize,
    pub max_bytes_per_publisher: usize,
    /// ...first written from one IPv4 /24 or IPv6 /48...
    pub max_records_per_prefix: usize,
    pub max_bytes_per_prefix: usize,
    /// ...and provider records announced from one.
    pub max_providers_per_prefix: usize,
    /// Held records one republish round re-stores at most.
    pub republish_budget: usize,
    /// Peers whose write allowance is remembered (least recently writing
    /// forgotten first).
    pub max_write_buckets: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            k: 20,
            alpha: 3,
            bootstrap_alpha: 20,
            lookup_extra: 0,
            slow_after: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(30),
            get_quorum: 3,
            max_record_size: 64 * 1024,
            record_ttl: Duration::from_secs(24 * 3600),
            max_record_ttl: Duration::from_secs(48 * 3600),
            provider_ttl: Duration::from_secs(24 * 3600),
            republish_interval: Duration::from_secs(3600),
            resume_after: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(600),
            max_per_subnet_per_bucket: 2,
            writes_per_sec: 20.0,
            write_burst: 100.0,
            slowdown_grace: Duration::from_secs(1),
            store_radius: 60,
            max_store_bytes: 256 << 20,
            max_records_per_publisher: 8192,
            max_bytes_per_publisher: 32 << 20,
            max_records_per_prefix: 8192,
            max_bytes_per_prefix: 32 << 20,
            max_providers_per_prefix: 16_384,
            republish_budget: 4096,
            max_write_buckets: 16_384,
        }
    }
}

impl DhtConfig {
    /// For networks whose nodes all share one address (a testnet on
    /// loopback): per-prefix quotas would put the whole network in one.
    pub fn shared_address(mut self) -> Self {
        self.max_records_per_prefix = usize::MAX;
        self.max_bytes_per_prefix = usize::MAX;
        self.max_providers_per_prefix = usize::MAX;
        self
    }
}

/// Rounds of more contacts a lookup whose candidates failed takes from
/// the routing table.
const MAX_WIDENING: u8 = 3;

/// The longest "retry after" we follow; a peer asking for more gets this.
const MAX_SLOWDOWN: Duration = Duration::from_secs(30);
/// How long after our last paced write to a peer we keep pacing it.
const PACE_MEMORY: Duration = Duration::from_secs(10);
/// Peers whose slow-down we remember at once.
const MAX_SLOWED_PEERS: usize = 4096;

/// Identifies a query started by the local node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Identifies one outbound request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a finished query produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryOutput {
    /// The closest peers that answered, nearest first.
    ClosestPeers(Vec<Contact>),
    /// The newest valid record found, if any.
    Get(Option<Record>),
    /// How many of the closest peers acknowledged the write.
    Put {
        stored: usize,
    },
    Provide {
        stored: usize,
    },
    Providers(Vec<Contact>),
    /// The routing table size after the self-lookup.
    Bootstrap {
        table: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResult {
    pub id: QueryId,
    pub output: QueryOutput,
    /// Peers that answered and that failed or timed out.
    pub answered: usize,
    pub failed: usize,
    /// Hops to the peer that produced the result (for GET, the first to
    /// return the record; otherwise the closest peer).
    pub hops: u32,
    pub elapsed: Duration,
    pub timed_out: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        id: RequestId,
        to: Contact,
        request: Request,
    },
    Done(QueryResult),
    /// The peer broke the protocol; the driver counts and may disconnect.
    Misbehaved {
        peer: PeerId,
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Lookup(QueryId),
    /// The write phase of a put / provide / repair / republish.
    Write(Option<QueryId>),
    /// Verifying a peer that asked us something before adding it.
    Verify,
    /// Liveness check of a full bucket's oldest entry.
    Liveness,
    Peers,
}

struct Outstanding {
    to: Contact,
    purpose: Purpose,
    sent: Instant,
    /// A write of a query, kept to send again if the peer says slow down.
    retry: Option<RequestBody>,
}

enum Kind {
    FindNode,
    Bootstrap,
    /// A bucket refresh; `joining` for those that finish a bootstrap.
    Refresh {
        joining: bool,
    },
    Get {
        /// Per publisher, in order of first sighting.
        found: Vec<Found>,
        /// Who answered, and the publisher and sequence they hold.
        answers: Vec<(Contact, Option<(PeerId, u64)>)>,
        /// Holders of one publisher's record that end the lookup early.
        quorum: usize,
    },
    /// Lookup first, then write `what` to the k closest.
    Put {
        record: Record,
    },
    Provide {
        key: Key,
    },
    GetProviders {
        found: Vec<Contact>,
        seen: HashSet<PeerId>,
    },
}

/// One publisher's record as a GET saw it: the newest sequence, how many
/// peers hold any of its records, and the hop it came from.
struct Found {
    record: Record,
    holders: usize,
    hop: u8,
}

/// The record a GET settles on: the publisher most peers hold (the first
/// seen on a tie), at the newest sequence seen. One peer near the key
/// cannot hand a fresh node a forged owner or an old sequence: it is one
/// holder among several.
fn leader(found: &[Found]) -> Option<&Found> {
    found.iter().rev().max_by_key(|f| f.holders)
}

struct Query {
    kind: Kind,
    lookup: Lookup,
    started: Instant,
    /// Set once the lookup is over and writes are in flight.
    writing: Option<WritePhase>,
    /// Background queries (refresh, republish, repair) report nothing.
    silent: bool,
    /// Times the lookup took more contacts from the table because too
    /// few of its candidates answered.
    widened: u8,
}

impl Query {
    /// When it returns what it has: the query timeout, or for writes
    /// under way, their own deadline.
    fn deadline(&self, timeout: Duration) -> Instant {
        match &self.writing {
            Some(w) => w.deadline,
            None => self.started + timeout,
        }
    }
}

struct WritePhase {
    /// Writes still out must be answered by then.
    deadline: Instant,
    pending: usize,
    stored: usize,
    answered: usize,
    failed: usize,
    hops: u32,
}

/// Counters a driver can export.
#[derive(Clone, Debug, Default)]
pub struct DhtStats {
    pub requests_in: u64,
    pub requests_out: u64,
    pub responses_bad: u64,
    pub records_rejected: u64,
    pub rate_limited: u64,
    pub contacts_filtered: u64,
    /// Own records or provided keys the store failed to keep.
    pub store_errors: u64,
    /// Our writes a peer asked us to send again later.
    pub slowed_down: u64,
    /// Writes refused for a key we are not close to, and over a quota.
    pub refused_far: u64,
    pub refused_quota: u64,
}

/// A peer's write allowance (token bucket) and the slots handed out to
/// writes it was told to send again.
#[derive(Clone, Copy, Debug)]
struct WriteBucket {
    tokens: f64,
    last: Instant,
    /// The next free retry slot.
    next_slot: Instant,
    /// When the current slow-down episode began, and the writes refused
    /// and taken after its grace.
    episode: Option<Instant>,
    late_refusals: u32,
    late_accepted: u32,
}

/// Our writes towards a peer that asked us to slow down.
#[derive(Clone, Copy, Debug)]
struct Pace {
    next: Instant,
    interval: Duration,
}

/// One of our writes waiting for the slot a peer gave it, or for our own
/// pacing towards a peer that asked us to slow down.
struct DelayedWrite {
    to: Contact,
    body: RequestBody,
    query: QueryId,
}

/// The Kademlia state machine of one node.
pub struct Dht {
    config: DhtConfig,
    keypair: Keypair,
    local: PeerId,
    listen: Option<TransportAddr>,
    table: RoutingTable,
    store: Box<dyn RecordStore>,
    rng: Rng,
    /// Wall clock: `unix_ms(now) = epoch.1 + (now - epoch.0)`.
    epoch: (Instant, u64),
    queries: BTreeMap<QueryId, Query>,
    /// By id, which is also send order: the first is the oldest.
    outstanding: BTreeMap<RequestId, Outstanding>,
    actions: VecDeque<Action>,
    next_query: u64,
    next_request: u64,
    verifying: HashSet<PeerId>,
    write_buckets: crate::recent::Recent<PeerId, WriteBucket>,
    quotas: quota::Quotas,
    /// Peers that asked us to slow down: when our next write to each may
    /// go, and the spacing they asked for. Forgotten once idle a while.
    pace: HashMap<PeerId, Pace>,
    delayed: BTreeMap<(Instant, u64), DelayedWrite>,
    /// Records this node published: re-signed with a higher sequence
    /// number before they expire.
    published: BTreeMap<Key, Record>,
    providing: BTreeSet<Key>,
    next_refresh: Instant,
    next_republish: Instant,
    pub stats: DhtStats,
}

impl Dht {
    /// A DHT for `keypair`'s peer, advertising `listen` to the peers it
    /// asks. `unix_ms` is the wall-clock time at `now`; `seed` seeds the
    /// random refresh keys (the simulator passes a fixed one).
    pub fn new(
        config: DhtConfig,
        keypair: Keypair,
        listen: Option<TransportAddr>,
        store: Box<dyn RecordStore>,
        now: Instant,
        unix_ms: u64,
        seed: u64,
    ) -> Self {
        let local = keypair.peer_id();
        let table = RoutingTable::new(
            Key::of_peer(&local),
            config.k,
            config.max_per_subnet_per_bucket,
        );
        let mut rng = Rng::new(seed);
        // Spread periodic work so a whole network does not tick at once.
        let jitter = |rng: &mut Rng, d: Duration| d.mul_f64(0.5 + rng.unit() * 0.5);
        let next_refresh = now + jitter(&mut rng, config.refresh_interval);
        let mut next_republish = now + jitter(&mut rng, config.republish_interval);
        // What this node owns survives restarts in the store.
        let published: BTreeMap<Key, Record> = store
            .own_records()
            .into_iter()
            .filter(|r| r.publisher == local)
            .map(|r| (r.key, r))
            .collect();
        let providing: BTreeSet<Key> = store.providing().into_iter().collect();
        if !published.is_empty() || !providing.is_empty() {
            next_republish = next_republish.min(now + config.resume_after);
        }
        // Others' records from a previous run count against the quotas
        // (by publisher; who wrote them is not kept).
        let write_buckets = crate::recent::Recent::new(config.max_write_buckets);
        let mut quotas = quota::Quotas::default();
        for key in store.keys() {
            if let Some(r) = store.get(&key).filter(|_| !published.contains_key(&key)) {
                quotas.insert(&r, None, now);
            }
        }
        Dht {
            config,
            keypair,
            local,
            listen,
            table,
            store,
            rng,
            epoch: (now, unix_ms),
            queries: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            actions: VecDeque::new(),
            next_query: 0,
            next_request: 0,
            verifying: HashSet::new(),
            write_buckets,
            quotas,
            pace: HashMap::new(),
            delayed: BTreeMap::new(),
            published,
            providing,
            next_refresh,
            next_republish,
            stats: DhtStats::default(),
        }
    }

    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Bytes of others' records held ([`DhtConfig::max_store_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.quotas.bytes()
    }

    pub fn local_id(&self) -> PeerId {
        self.local
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn store(&self) -> &dyn RecordStore {
        self.store.as_ref()
    }

    pub fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Queries still running.
    pub fn queries_in_flight(&self) -> usize {
        self.queries.len()
    }

    // ----- starting queries -------------------------------------------

    fn start(
        &mut self,
        now: Instant,
        kind: Kind,
        target: Key,
        extra: Vec<Contact>,
        silent: bool,
    ) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let mut start = self.table.closest(&target, self.config.k);
        for c in extra {
            if c.id != self.local && !start.iter().any(|s| s.id == c.id) {
                start.push(c);
            }
        }
        let k = self.config.k;
        let alpha = match kind {
            Kind::Bootstrap | Kind::Refresh { joining: true } => self.config.bootstrap_alpha,
            _ => self.config.alpha,
        };
        let lookup = Lookup::with_width(target, k, k + self.config.lookup_extra, alpha, start);
        self.queries.insert(
            id,
            Query {
                kind,
                lookup,
                started: now,
                writing: None,
                silent,
                widened: 0,
            },
        );
        self.advance(now, id);
        id
    }

    /// Joins the network through `seeds`: a lookup of our own key, then a
    /// refresh of every bucket.
    pub fn bootstrap(&mut self, now: Instant, seeds: Vec<Contact>) -> QueryId {
        let target = Key::of_peer(&self.local);
        self.start(now, Kind::Bootstrap, target, seeds, false)
    }

    pub fn closest_peers(&mut self, now: Instant, target: Key) -> QueryId {
        self.start(now, Kind::FindNode, target, vec![], false)
    }

    /// The record under `key`, as `get_quorum` of the closest peers hold
    /// it (see [`DhtConfig::get_quorum`]).
    pub fn get(&mut self, now: Instant, key: Key) -> QueryId {
        self.get_with_quorum(now, key, self.config.get_quorum)
    }

    /// The first valid record any peer returns: one round trip sooner,
    /// but a single peer near the key decides what it is.
    pub fn get_first(&mut self, now: Instant, key: Key) -> QueryId {
        self.get_with_quorum(now, key, 1)
    }

    fn get_with_quorum(&mut self, now: Instant, key: Key, quorum: usize) -> QueryId {
        // Our own copy counts as one holder, and wins a tie.
        let found = self
            .live_record(now, &key)
            .map(|record| Found {
                record,
                holders: 1,
                hop: 0,
            })
            .into_iter()
            .collect();
        let kind = Kind::Get {
            found,
            answers: Vec::new(),
            quorum: quorum.max(1),
        };
        self.start(now, kind, key, vec![], false)
    }

    /// Signs `value` under `key` with the next sequence number and stores
    /// it on the k closest peers (and locally). A value over
    /// `max_record_size` is refused: no peer would store it, nor would
    /// this node load it after a restart.
    pub fn put(&mut self, now: Instant, key: Key, value: Bytes) -> Result<QueryId, RecordError> {
        if value.len() > self.config.max_record_size {
            return Err(RecordError::TooLarge {
                len: value.len(),
                max: self.config.max_record_size,
            });
        }
        let seq = self
            .published
            .get(&key)
            .map(|r| r.seq)
            .into_iter()
            .chain(
                self.store
                    .get(&key)
                    .filter(|r| r.publisher == self.local)
                    .map(|r| r.seq),
            )
            .max()
            .map_or(1, |s| s + 1);
        let expires = self.unix_ms(now) + self.config.record_ttl.as_millis() as u64;
        let record = Record::sign(&self.keypair, key, value, seq, expires);
        self.published.insert(key, record.clone());
        if self.store.put_own(record.clone()).is_err() {
            self.stats.store_errors += 1;
        }
        Ok(self.start(now, Kind::Put { record }, key, vec![], false))
    }

    /// Announces this node as a provider of `key` on the k closest peers.
    pub fn provide(&mut self, now: Instant, key: Key) -> QueryId {
        if self.providing.insert(key) && self.store.add_providing(key).is_err() {
            self.stats.store_errors += 1;
        }
        self.start(now, Kind::Provide { key }, key, vec![], false)
    }

    pub fn providers(&mut self, now: Instant, key: Key) -> QueryId {
        // The provider records we hold count too: the node a provider
        // announced to must find it as well as anyone.
        let now_ms = self.unix_ms(now);
        let found: Vec<Contact> = self
            .store
            .providers(&key)
            .into_iter()
            .filter(|p| p.expires_ms > now_ms)
            .map(|p| p.provider)
            .collect();
        let seen = found.iter().map(|c| c.id).collect();
        let kind = Kind::GetProviders { found, seen };
        self.start(now, kind, key, vec![], false)
    }

    /// Asks a connected peer for peers it knows (peer exchange).
    pub fn ask_peers(&mut self, now: Instant, to: Contact, max: u8) {
        self.send(now, to, RequestBody::Peers { max }, Purpose::Peers);
    }

    fn live_record(&self, now: Instant, key: &Key) -> Option<Record> {
        let now_ms = self.unix_ms(now);
        self.store.get(key).filter(|r| r.expires_ms > now_ms)
    }

    fn send(&mut self, now: Instant, to: Contact, body: RequestBody, purpose: Purpose) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.stats.requests_out += 1;
        let retry = matches!(purpose, Purpose::Write(Some(_))).then(|| body.clone());
        self.outstanding.insert(
            id,
            Outstanding {
                to,
                purpose,
                sent: now,
                retry,
            },
        );
        self.actions.push_back(Action::Send {
            id,
            to,
            request: Request {
                listen: self.listen,
                body,
            },
        });
    }

    /// Sends a write of query `q` now, or, towards a peer that asked us
    /// to slow down, at our next paced slot for it.
    fn send_write(&mut self, now: Instant, to: Contact, body: RequestBody, q: QueryId) {
        match self.pace.get_mut(&to.id) {
            Some(p) => {
                let at = p.next.max(now);
                p.next = at + p.interval;
                if at <= now {
                    self.send(now, to, body, Purpose::Write(Some(q)));
                } else {
                    self.delay_write(at, to, body, q);
                }
            }
            None => self.send(now, to, body, Purpose::Write(Some(q))),
        }
    }

    fn delay_write(&mut self, at: Instant, to: Contact, body: RequestBody, query: QueryId) {
        let seq = self.next_request;
        self.next_request += 1;
        self.delayed
            .insert((at, seq), DelayedWrite { to, body, query });
    }

    // ----- inbound requests -------------------------------------------

    /// The spacing of writes at the allowed rate.
    fn write_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.config.writes_per_sec.max(0.001))
    }

    /// Takes a write token from `peer`'s bucket, or hands the write a
    /// retry slot: `Err(retry after)`. A peer that keeps writing long after
    /// it was first told to wait is reported.
    fn allow_write(&mut self, now: Instant, peer: &PeerId) -> Result<(), Duration> {
        let (rate, burst) = (
            self.config.writes_per_sec.max(0.001),
            self.config.write_burst,
        );
        let b = self.write_buckets.entry(*peer, || WriteBucket {
            tokens: burst,
            last: now,
            next_slot: now,
            episode: None,
            late_refusals: 0,
            late_accepted: 0,
        });
        b.tokens =
            (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        let grace = self.config.slowdown_grace;
        let late = |b: &WriteBucket| {
            b.episode
                .is_some_and(|e| now.saturating_duration_since(e) > grace)
        };
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            if b.next_slot <= now {
                b.episode = None;
                b.late_refusals = 0;
                b.late_accepted = 0;
            } else if late(b) {
                b.late_accepted += 1;
            }
            return Ok(());
        }
        // Slots at the token rate, after those already handed out.
        let until_token = Duration::from_secs_f64((1.0 - b.tokens) / rate);
        let slot = b.next_slot.max(now + until_token);
        b.next_slot = slot + Duration::from_secs_f64(1.0 / rate);
        b.episode.get_or_insert(now);
        if late(b) {
            b.late_refusals += 1;
        }
        // A writer that paces itself is refused now and then (a write
        // that travelled faster than the one before it); one that ignores
        // the answer is refused far more often than it is served.
        let ignoring = f64::from(b.late_refusals) > burst + f64::from(b.late_accepted);

        self.stats.rate_limited += 1;
        if ignoring {
            self.misbehaved(*peer, "write_flood");
        }
        Err(slot.saturating_duration_since(now))
    }

    /// Whether we are plausibly among the peers responsible for `key`.
    fn is_close(&self, key: &Key) -> bool {
        let radius = self.config.store_radius.max(self.config.k);
        self.table.closer_than_local(key, radius) < radius
    }

    /// Stores a record after every check; used for PUTs from peers (from
    /// `prefix`) and for records found by our own GETs (`None`).
    fn accept_record(
        &mut self,
        now: Instant,
        record: Record,
        prefix: Option<Prefix>,
    ) -> Result<(), ErrorCode> {
        let now_ms = self.unix_ms(now);
        let max_ttl = self.config.max_record_ttl.as_millis() as u64;
        if let Err(e) = record.validate(now_ms, self.config.max_record_size, max_ttl) {
            self.stats.records_rejected += 1;
            return Err(match e {
                RecordError::TooLarge { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::InvalidRecord,
            });
        }
        let held = self.live_record(now, &record.key);
        if let Some(have) = &held {
            if *have == record {
                self.quotas.refreshed(&record.key, now);
                return Ok(());
            }
            if let Err(e) = record.supersedes(have) {
                self.stats.records_rejected += 1;
                return Err(match e {
                    RecordError::NotOwner => ErrorCode::NotOwner,
                    _ => ErrorCode::Stale,
                });
            }
        }
        if self.published.contains_key(&record.key) {
            // Ours; only we sign newer ones.
            return Err(ErrorCode::Stale);
        }
        if held.is_none() && !self.is_close(&record.key) {
            self.stats.refused_far += 1;
            return Err(ErrorCode::NotClose);
        }
        if self.quotas.admit(&self.config, &record, prefix).is_err() {
            self.stats.refused_quota += 1;
            return Err(ErrorCode::StoreFull);
        }
        self.store
            .put(record.clone())
            .map_err(|_| ErrorCode::StoreFull)?;
        self.quotas.insert(&record, prefix, now);
        Ok(())
    }

    /// Stores `provider`'s announcement that it provides `key`.
    fn accept_provider(
        &mut self,
        now: Instant,
        key: Key,
        provider: Contact,
    ) -> Result<(), ErrorCode> {
        let prefix = Prefix::of(provider.addr.ip());
        let known = self
            .store
            .providers(&key)
            .iter()
            .any(|p| p.provider.id == provider.id);
        if !known && !self.is_close(&key) {
            self.stats.refused_far += 1;
            return Err(ErrorCode::NotClose);
        }
        if !self
            .quotas
            .admit_provider(&self.config, &key, &provider.id, prefix)
        {
            self.stats.refused_quota += 1;
            return Err(ErrorCode::StoreFull);
        }
        let id = provider.id;
        let rec = ProviderRecord {
            provider,
            expires_ms: self.unix_ms(now) + self.config.provider_ttl.as_millis() as u64,
        };
        self.store
            .add_provider(key, rec)
            .map_err(|_| ErrorCode::StoreFull)?;
        self.quotas.insert_provider(key, id, prefix);
        Ok(())
    }

    /// Answers a request from `from`, whose listen address (as seen by
    /// the driver: the connection's IP and the advertised port) is `addr`.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: PeerId,
        addr: Option<TransportAddr>,
        body: RequestBody,
    ) -> Response {
        self.stats.requests_in += 1;
        let prefix = addr.map(|a| Prefix::of(a.socket.ip()));
        let addr = addr.filter(|a| addr_usable(&a.socket));
        let is_ping = matches!(body, RequestBody::Ping);
        let k = self.config.k;
        let closer = |t: &RoutingTable, key: &Key| -> Vec<Contact> {
            let mut c = t.closest(key, k + 1);
            c.retain(|c| c.id != from);
            c.truncate(k);
            c
        };
        let resp = match body {
            RequestBody::Ping => Response::Pong,
            RequestBody::FindNode { target } => Response::Nodes {
                closer: closer(&self.table, &target),
            },
            RequestBody::GetRecord { key } => Response::Record {
                record: self.live_record(now, &key),
                closer: closer(&self.table, &key),
            },
            RequestBody::PutRecord { record } => match self.allow_write(now, &from) {
                Err(wait) => Response::slow_down(wait, self.write_interval()),
                Ok(()) => match self.accept_record(now, record, prefix) {
                    Ok(()) => Response::Stored,
                    Err(code) => Response::Error(code),
                },
            },
            RequestBody::AddProvider { key } => match addr {
                None => Response::Error(ErrorCode::Unsupported),
                Some(a) => match self.allow_write(now, &from) {
                    Err(wait) => Response::slow_down(wait, self.write_interval()),
                    Ok(()) => match self.accept_provider(now, key, Contact::at(from, a)) {
                        Ok(()) => Response::Stored,
                        Err(code) => Response::Error(code),
                    },
                },
            },
            RequestBody::GetProviders { key } => {
                let now_ms = self.unix_ms(now);
                let providers = self
                    .store
                    .providers(&key)
                    .into_iter()
                    .filter(|p| p.expires_ms > now_ms)
                    .map(|p| p.provider)
                    .take(k)
                    .collect();
                Response::Providers {
                    providers,
                    closer: closer(&self.table, &key),
                }
            }
            RequestBody::Peers { max } => {
                let max = (max as usize).min(k);
                let mut peers: Vec<Contact> = self
                    .table
                    .entries()
                    .map(|e| e.contact)
                    .filter(|c| c.id != from)
                    .collect();
                // A random sample, so peers learn different parts of the table.
                for i in 0..peers.len().min(max) {
                    let j = i + self.rng.below((peers.len() - i) as u64) as usize;
                    peers.swap(i, j);
                }
                peers.truncate(max);
                Response::Peers { peers }
            }
        };
        // A peer that asks may join our table once it answers a ping (not
        // for pings: those are how verification itself is done).
        if let Some(a) = addr.filter(|_| !is_ping) {
            self.verify(now, Contact::at(from, a));
        }
        resp
    }

    /// Pings `c` to add it to the table if its bucket could take it.
    fn verify(&mut self, now: Instant, c: Contact) {
        if self.verifying.len() < 256
            && self.table.would_accept(&c.id)
            && self.verifying.insert(c.id)
        {
            self.send(now, c, RequestBody::Ping, Purpose::Verify);
        }
    }

    fn misbehaved(&mut self, peer: PeerId, reason: &'static str) {
        self.actions.push_back(Action::Misbehaved { peer, reason });
    }

    // ----- responses ----------------------------------------------------

    /// Drops contacts we must never store: ourselves, the responder,
    /// duplicates, unusable addresses, loopback from a non-loopback peer,
    /// and anything past `k`.
    fn filter_contacts(&mut self, from: &Contact, mut list: Vec<Contact>) -> Vec<Contact> {
        let k = self.config.k;
        if list.len() > k {
            self.misbehaved(from.id, "too_many_contacts");
        }
        let before = list.len();
        let mut seen = key::IdSet::default();
        let remote_loopback = from.addr.ip().is_loopback();
        list.retain(|c| {
            c.id != self.local
                && c.id != from.id
                && addr_usable(&c.addr)
                && (remote_loopback || !c.addr.ip().is_loopback())
                && seen.insert(c.id)
        });
        list.truncate(k);
        self.stats.contacts_filtered += (before - list.len()) as u64;
        list
    }

    /// The response to request `id`.
    pub fn on_response(&mut self, now: Instant, id: RequestId, response: Response) {
        let Some(out) = self.outstanding.remove(&id) else {
            return;
        };
        let from = out.to;
        if let Insert::PingOldest(oldest) = self.table.on_answered(from, now) {
            self.send(now, oldest, RequestBody::Ping, Purpose::Liveness);
        }
        match out.purpose {
            Purpose::Verify => {
                self.verifying.remove(&from.id);
            }
            Purpose::Liveness => self.table.clear_pending_for(&from.id),
            Purpose::Peers => {
                if let Response::Peers { peers } = response {
                    for c in self.filter_contacts(&from, peers) {
                        self.verify(now, c);
                    }
                }
            }
            Purpose::Write(q) => {
                if let (
                    Response::SlowDown {
                        retry_after_ms,
                        interval_us,
                    },
                    Some(q),
                    Some(body),
                ) = (&response, q, out.retry)
                {
                    let wait = Duration::from_millis(u64::from(*retry_after_ms));
                    let interval = Duration::from_micros(u64::from(*interval_us));
                    if self.retry_write(now, q, from, body, wait, interval) {
                        return;
                    }
                }
                let ok = matches!(response, Response::Stored);
                self.on_write_done(now, q, ok);
            }
            Purpose::Lookup(q) => self.on_lookup_response(now, q, from, response),
        }
    }

    /// Request `id` failed (connection refused, closed, or timed out).
    pub fn on_failure(&mut self, now: Instant, id: RequestId) {
        let Some(out) = self.outstanding.remove(&id) else {
            return;
        };
        self.table.on_failed(&out.to.id);
        match out.purpose {
            Purpose::Verify => {
                self.verifying.remove(&out.to.id);
            }
            Purpose::Liveness | Purpose::Peers => {}
            Purpose::Write(q) => self.on_write_done(now, q, false),
            Purpose::Lookup(q) => {
                if let Some(query) = self.queries.get_mut(&q) {
                    query.lookup.on_failure(&out.to.id);
                }
                self.advance(now, q);
            }
        }
    }

    fn on_lookup_response(&mut self, now: Instant, q: QueryId, from: Contact, response: Response) {
        let (closer, record, providers) = match response {
            Response::Nodes { closer } => (closer, None, None),
            Response::Record { record, closer } => (closer, record, None),
            Response::Providers { providers, closer } => (closer, None, Some(providers)),
            _ => {
                self.stats.responses_bad += 1;
                self.misbehaved(from.id, "wrong_response");
                if let Some(query) = self.queries.get_mut(&q) {
                    query.lookup.on_failure(&from.id);
                }
                self.advance(now, q);
                return;
            }
        };
        let closer = self.filter_contacts(&from, closer);
        let providers = providers.map(|p| {
            let mut seen = HashSet::new();
            p.into_iter()
                .filter(|c| addr_usable(&c.addr) && seen.insert(c.id))
                .take(self.config.k)
                .collect::<Vec<_>>()
        });
        // Validate a returned record outside the query borrow.
        let record = match record {
            Some(r) => {
                let now_ms = self.unix_ms(now);
                let max_ttl = self.config.max_record_ttl.as_millis() as u64;
                match self.queries.get(&q).map(|qq| *qq.lookup.target()) {
                    Some(target)
                        if r.key == target
                            && r.validate(now_ms, self.config.max_record_size, max_ttl)
                                .is_ok() =>
                    {
                        Some(r)
                    }
                    Some(_) => {
                        self.stats.records_rejected += 1;
                        self.misbehaved(from.id, "bad_record");
                        None
                    }
                    None => None,
                }
            }
            None => None,
        };
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        let hop = query.lookup.hop_of(&from.id);
        query.lookup.on_answer(&from.id, closer);
        match &mut query.kind {
            Kind::Get { found, answers, .. } => {
                answers.push((from, record.as_ref().map(|r| (r.publisher, r.seq))));
                if let Some(r) = record {
                    match found.iter_mut().find(|f| f.record.publisher == r.publisher) {
                        Some(f) => {
                            f.holders += 1;
                            if r.seq > f.record.seq {
                                f.record = r;
                                f.hop = hop;
                            }
                        }
                        None => found.push(Found {
                            record: r,
                            holders: 1,
                            hop,
                        }),
                    }
                }
            }
            Kind::GetProviders { found, seen } => {
                for p in providers.unwrap_or_default() {
                    if seen.insert(p.id) {
                        found.push(p);
                    }
                }
            }
            _ => {}
        }
        self.advance(now, q);
    }

    /// A peer asked us to send write `body` of query `q` again after
    /// `wait`, and the rest `interval` apart: the write gets that slot if
    /// the query still runs by then (it stays pending), and our next
    /// writes to the peer are paced after it.
    fn retry_write(
        &mut self,
        now: Instant,
        q: QueryId,
        to: Contact,
        body: RequestBody,
        wait: Duration,
        interval: Duration,
    ) -> bool {
        let Some(query) = self.queries.get(&q) else {
            return false;
        };
        // The retry takes the first paced slot at or after the one given,
        // so retries and new writes to the peer never bunch up.
        let interval = interval.min(MAX_SLOWDOWN);
        let given = now + wait.min(MAX_SLOWDOWN);
        let at = self.pace.get(&to.id).map_or(given, |p| given.max(p.next));
        if at >= query.deadline(self.config.query_timeout) {
            return false;
        }
        self.stats.slowed_down += 1;
        if self.pace.len() < MAX_SLOWED_PEERS || self.pace.contains_key(&to.id) {
            let p = self
                .pace
                .entry(to.id)
                .or_insert(Pace { next: at, interval });
            p.interval = interval;
            p.next = at + interval;
        }
        self.delay_write(at, to, body, q);
        true
    }

    fn on_write_done(&mut self, now: Instant, q: Option<QueryId>, ok: bool) {
        let Some(q) = q else { return };
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        let Some(w) = query.writing.as_mut() else {
            return;
        };
        w.pending = w.pending.saturating_sub(1);
        if ok {
            w.stored += 1;
        }
        if w.pending == 0 {
            self.finish(now, q, false);
        }
    }

    // ----- driving queries ------------------------------------------------

    /// Sends what the query may send, or finishes it.
    fn advance(&mut self, now: Instant, q: QueryId) {
        loop {
            let Some(query) = self.queries.get_mut(&q) else {
                return;
            };
            if query.writing.is_some() {
                return;
            }
            // A GET that has one publisher's record from enough peers
            // need not wait.
            if let Kind::Get { found, quorum, .. } = &query.kind {
                if leader(found).is_some_and(|f| f.holders >= *quorum) {
                    self.finish(now, q, false);
                    return;
                }
            }
            if query.lookup.is_done() {
                // Fewer than k answered (the closest known peers timed out
                // or are gone): ask the next closest in the table before
                // giving up, a few times at most.
                let (answered, failed) = query.lookup.counts();
                if answered < self.config.k && query.widened < MAX_WIDENING {
                    query.widened += 1;
                    let target = *query.lookup.target();
                    let more = self
                        .table
                        .closest(&target, answered + failed + self.config.k);
                    if query.lookup.extend(more) > 0 {
                        continue;
                    }
                }
                break;
            }
            let Some(to) = query.lookup.next_request(now) else {
                return;
            };
            let target = *query.lookup.target();
            let body = match &query.kind {
                Kind::Get { .. } => RequestBody::GetRecord { key: target },
                Kind::GetProviders { .. } => RequestBody::GetProviders { key: target },
                _ => RequestBody::FindNode { target },
            };
            self.send(now, to, body, Purpose::Lookup(q));
        }
        self.begin_writes(now, q);
    }

    /// The lookup is over (or out of time): writes go to the k closest
    /// that answered, other queries finish.
    fn begin_writes(&mut self, now: Instant, q: QueryId) {
        let Some(query) = self.queries.get_mut(&q) else {
            return;
        };
        let closest = query.lookup.closest_answered(self.config.k);
        let body = match &query.kind {
            Kind::Put { record } => Some(RequestBody::PutRecord {
                record: record.clone(),
            }),
            Kind::Provide { key } => Some(RequestBody::AddProvider { key: *key }),
            _ => None,
        };
        match body {
            Some(body) if !closest.is_empty() => {
                let (answered, failed) = query.lookup.counts();
                let deadline = (query.started + self.config.query_timeout)
                    .max(now + self.config.request_timeout);
                query.writing = Some(WritePhase {
                    deadline,
                    pending: closest.len(),
                    stored: 0,
                    answered,
                    failed,
                    hops: closest.first().map_or(0, |c| c.1 as u32),
                });
                for (c, _) in closest {
                    self.send_write(now, c, body.clone(), q);
                }
            }
            _ => self.finish(now, q, false),
        }
    }

    fn finish(&mut self, now: Instant, q: QueryId, timed_out: bool) {
        let Some(query) = self.queries.remove(&q) else {
            return;
        };
        let (mut answered, mut failed) = query.lookup.counts();
        let closest = query.lookup.closest_answered(self.config.k);
        let mut hops = closest.first().map_or(0, |c| c.1 as u32);
        let output = match query.kind {
            Kind::FindNode | Kind::Refresh { .. } => {
                QueryOutput::ClosestPeers(closest.into_iter().map(|c| c.0).collect())
            }
            Kind::Bootstrap => {
                // Fill the table: refresh every bucket beyond our neighbours.
                for lz in self.table.stale_buckets(now + Duration::from_secs(1)) {
                    self.refresh_bucket(now, lz, true);
                }
                QueryOutput::Bootstrap {
                    table: self.table.len(),
                }
            }
            Kind::Get { found, answers, .. } => {
                let best = leader(&found).map(|f| (f.record.clone(), f.hop));
                if let Some((r, hop)) = &best {
                    hops = *hop as u32;
                    // Repair the closest peers that answered with an older
                    // copy or none (those holding another publisher's
                    // record would refuse it).
                    // Only peers nearer the key than a holder that answered
                    // are repaired: they are among those who should hold
                    // it; a peer farther off was only on the way.
                    let target = r.key;
                    let farthest_holder = answers
                        .iter()
                        .filter(|(_, held)| held.is_some_and(|(p, _)| p == r.publisher))
                        .map(|(c, _)| Key::of_peer(&c.id).distance(&target))
                        .max();
                    let stale = answers.into_iter().filter(|(c, held)| {
                        let behind = match held {
                            None => true,
                            Some((p, seq)) => *p == r.publisher && *seq < r.seq,
                        };
                        behind
                            && farthest_holder
                                .is_some_and(|f| Key::of_peer(&c.id).distance(&target) < f)
                    });
                    for (c, _) in stale.filter(|(c, _)| closest.iter().any(|x| x.0.id == c.id)) {
                        self.send(
                            now,
                            c,
                            RequestBody::PutRecord { record: r.clone() },
                            Purpose::Write(None),
                        );
                    }
                    // Kept here too if this node is one of the key's holders.
                    if self.is_close(&r.key) {
                        let _ = self.accept_record(now, r.clone(), None);
                    }
                }
                QueryOutput::Get(best.map(|(r, _)| r))
            }
            Kind::Put { .. } | Kind::Provide { .. } => {
                let stored = query.writing.as_ref().map_or(0, |w| w.stored);
                if let Some(w) = &query.writing {
                    answered = w.answered;
                    failed = w.failed;
                    hops = w.hops;
                }
                if matches!(query.kind, Kind::Put { .. }) {
                    QueryOutput::Put { stored }
                } else {
                    QueryOutput::Provide { stored }
                }
            }
            Kind::GetProviders { found, .. } => QueryOutput::Providers(found),
        };
        if !query.silent {
            self.actions.push_back(Action::Done(QueryResult {
                id: q,
                output,
                answered,
                failed,
                hops,
                elapsed: now.saturating_duration_since(query.started),
                timed_out,
            }));
        }
    }

    /// Refreshes every bucket now (a lookup of a random key in each).
    pub fn refresh(&mut self, now: Instant) {
        for lz in self.table.stale_buckets(now + Duration::from_secs(1)) {
            self.refresh_bucket(now, lz, false);
        }
    }

    fn refresh_bucket(&mut self, now: Instant, leading_zeros: usize, joining: bool) {
        let mut r = [0u8; 32];
        self.rng.fill(&mut r);
        let target = self.table.local().random_at(leading_zeros, r);
        self.table.mark_refreshed(leading_zeros, now);
        self.start(now, Kind::Refresh { joining }, target, vec![], true);
    }

    // ----- time -------------------------------------------------------------

    /// Runs timers: request timeouts, slow lookups, query deadlines,
    /// bucket refresh, republish and expiry.
    pub fn tick(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let w = entry.remove();
            if self.queries.contains_key(&w.query) {
                self.send(now, w.to, w.body, Purpose::Write(Some(w.query)));
            }
        }
        // A peer that has not slowed us down for a while is written to freely.
        self.pace.retain(|_, p| p.next + PACE_MEMORY > now);
        let timeout = self.config.request_timeout;
        while let Some((&id, o)) = self.outstanding.first_key_value() {
            if now.saturating_duration_since(o.sent) < timeout {
                break;
            }
            self.on_failure(now, id);
        }
        let ids: Vec<QueryId> = self.queries.keys().copied().collect();
        for q in ids {
            let Some(query) = self.queries.get_mut(&q) else {
                continue;
            };
            if now >= query.deadline(self.config.query_timeout) {
                // A write whose lookup ran out of time still stores on the
                // closest peers it found, rather than on none.
                let writes = matches!(query.kind, Kind::Put { .. } | Kind::Provide { .. });
                if writes && query.writing.is_none() && query.lookup.counts().0 > 0 {
                    self.begin_writes(now, q);
                } else {
                    self.finish(now, q, true);
                }
                continue;
            }
            query.lookup.mark_slow(now, self.config.slow_after);
            self.advance(now, q);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.refresh_interval;
            let before = now.checked_sub(self.config.refresh_interval).unwrap_or(now);
            for lz in self.table.stale_buckets(before) {
                self.refresh_bucket(now, lz, false);
            }
        }
        if now >= self.next_republish {
            self.next_republish = now + self.config.republish_interval;
            self.republish(now);
        }
    }

    fn republish(&mut self, now: Instant) {
        let now_ms = self.unix_ms(now);
        // Our own records: re-sign before half the lifetime has passed.
        let ttl = self.config.record_ttl.as_millis() as u64;
        // The rest are re-stored as they are, like anyone's: the k closest
        // may have changed, or lost their copies.
        let own: Vec<Record> = self.published.values().cloned().collect();
        for r in own {
            if r.expires_ms.saturating_sub(now_ms)
                < ttl / 2 + self.config.republish_interval.as_millis() as u64
            {
                let _ = self.put(now, r.key, r.value.clone());
            } else {
                self.start(now, Kind::Put { record: r.clone() }, r.key, vec![], true);
            }
        }
        // Records we hold: drop the expired; re-store on the current k
        // closest (which may have changed) those no other holder re-stored
        // with us this interval, within the round's budget.
        for key in self.store.keys() {
            if self.store.get(&key).is_none_or(|r| r.expires_ms <= now_ms) {
                self.store.remove(&key);
                self.quotas.remove(&key);
            }
        }
        let before = now
            .checked_sub(self.config.republish_interval)
            .unwrap_or(now);
        for key in self
            .quotas
            .due_for_republish(before, self.config.republish_budget)
        {
            if let Some(r) = self.store.get(&key) {
                self.quotas.refreshed(&key, now);
                self.start(now, Kind::Put { record: r }, key, vec![], true);
            }
        }
        for key in self.store.provider_keys() {
            for p in self.store.providers(&key) {
                if p.expires_ms <= now_ms {
                    self.store.remove_provider(&key, &p.provider.id);
                    self.quotas.remove_provider(&key, &p.provider.id);
                }
            }
        }
        let provided: Vec<Key> = self.providing.iter().copied().collect();
        for key in provided {
            self.start(now, Kind::Provide { key }, key, vec![], true);
        }
    }

    /// When [`Dht::tick`] next has work.
    pub fn next_deadline(&self) -> Instant {
        let mut at = self.next_refresh.min(self.next_republish);
        if let Some(((t, _), _)) = self.delayed.first_key_value() {
            at = at.min(*t);
        }
        if let Some((_, o)) = self.outstanding.first_key_value() {
            at = at.min(o.sent + self.config.request_timeout);
        }
        for q in self.queries.values() {
            at = at.min(q.deadline(self.config.query_timeout));
            if let Some(s) = q.lookup.next_slow_at(self.config.slow_after) {
                at = at.min(s);
            }
        }
        at
    }

    /// Forgets `peer` (banned or known dead).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.table.remove(peer);
    }
}

#[cfg(test)]
mod tests;
