//! Metric families that every worker records into without sharing a cache line: one
//! shard per recording thread, merged when `/metrics` is scraped.
//!
//! prometheus-client's `Family` takes a read lock on one shared map per lookup, and its
//! `Histogram` a mutex per observation; with every worker recording each finished request
//! into the same few families, those locks bounce between cores (`scripts/bench-metrics`:
//! two threads recording at once paid 2.2–2.3x the time per request of one). Here a thread
//! locks only its own shard (uncontended but for a scrape), and a scrape sums the shards
//! and encodes the result exactly as a `Family` of `Counter`s or `Histogram`s would.
//!
//! A series is looked up by a [`LabelKey`]: a borrowed view of its label set where the
//! label set holds `Arc`s that every worker shares (the route's id, the destination),
//! so that recording a hot series writes no shared reference count.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::{Equivalent, HashMap};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Shards per family: threads past this many share shards (still correct, only
/// contended again). Workers are one per CPU, and few machines give a pod more.
const SHARDS: usize = 64;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, assigned in the order threads first record.
    static SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// What a series is looked up by: its label set `S` itself, or a view of it that hashes
/// and compares as `S` does, made into an `S` only when the series is new to a shard.
pub trait LabelKey<S>: Hash + Equivalent<S> {
    /// The label set to store.
    fn to_labels(&self) -> S;
}

impl<S: Clone + Hash + Eq> LabelKey<S> for S {
    fn to_labels(&self) -> S {
        self.clone()
    }
}

/// What a shard keeps per label set.
pub trait ShardValue: Send + 'static {
    /// What every value of a family shares (a histogram's bucket bounds).
    type Config: std::fmt::Debug + Send + Sync + 'static;
    /// The OpenMetrics type the family is encoded as.
    const TYPE: MetricType;
    /// A value with nothing recorded.
    fn new(config: &Self::Config) -> Self;
    /// Adds another shard's value into this one.
    fn merge(&mut self, other: &Self);
    /// Encodes the (merged) value.
    fn encode(&self, config: &Self::Config, encoder: MetricEncoder) -> std::fmt::Result;
}

/// A counter's value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count(u64);

impl ShardValue for Count {
    type Config = ();
    const TYPE: MetricType = MetricType::Counter;
    fn new(_: &()) -> Count {
        Count(0)
    }
    fn merge(&mut self, other: &Count) {
        self.0 += other.0;
    }
    fn encode(&self, _: &(), mut encoder: MetricEncoder) -> std::fmt::Result {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0, None)
    }
}

/// A histogram's observations: sum, count and per-bucket counts (not cumulative, as
/// prometheus-client keeps them; the encoder accumulates).
#[derive(Debug, Clone)]
pub struct Observations {
    sum: f64,
    count: u64,
    buckets: Box<[u64]>,
}

/// A histogram family's bucket upper bounds, the last one `+Inf`.
#[derive(Debug)]
pub struct Buckets(Box<[f64]>);

impl ShardValue for Observations {
    type Config = Buckets;
    const TYPE: MetricType = MetricType::Histogram;
    fn new(config: &Buckets) -> Observations {
        Observations {
            sum: 0.0,
            count: 0,
            buckets: vec![0; config.0.len()].into(),
        }
    }
    fn merge(&mut self, other: &Observations) {
        self.sum += other.sum;
        self.count += other.count;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }
    fn encode(&self, config: &Buckets, mut encoder: MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = config
            .0
            .iter()
            .copied()
            .zip(self.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }
}

/// One shard, on a cache line of its own (two, for CPUs that fetch lines in pairs).
#[repr(align(128))]
struct Shard<S, V>(Mutex<HashMap<S, V>>);

struct Inner<S, V: ShardValue> {
    shards: Box<[Shard<S, V>]>,
    config: V::Config,
}

/// A family of counters or histograms by label set `S`, sharded by recording thread.
/// Cloning shares it (register a clone, record into the original).
pub struct ShardedFamily<S, V: ShardValue>(Arc<Inner<S, V>>);

impl<S, V: ShardValue> Clone for ShardedFamily<S, V> {
    fn clone(&self) -> Self {
        ShardedFamily(self.0.clone())
    }
}

impl<S, V: ShardValue> std::fmt::Debug for ShardedFamily<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedFamily")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while recording leaves plain numbers, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<S: Clone + Hash + Eq, V: ShardValue> ShardedFamily<S, V> {
    fn with_config(config: V::Config) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard(Mutex::new(HashMap::new())))
            .collect();
        ShardedFamily(Arc::new(Inner { shards, config }))
    }

    /// Applies `f` to this thread's value for `key`'s series (created empty first).
    fn update<K: LabelKey<S> + ?Sized>(&self, key: &K, f: impl FnOnce(&mut V)) {
        let shard = &self.0.shards[SHARD.with(|s| *s)];
        let mut map = lock(&shard.0);
        match map.get_mut(key) {
            Some(v) => f(v),
            None => f(map
                .entry(key.to_labels())
                .or_insert_with(|| V::new(&self.0.config))),
        }
    }

    /// Every label set's value, summed over the shards.
    pub fn merged(&self) -> HashMap<S, V> {
        let mut out: HashMap<S, V> = HashMap::new();
        for shard in self.0.shards.iter() {
            for (labels, v) in lock(&shard.0).iter() {
                match out.get_mut(labels) {
                    Some(total) => total.merge(v),
                    None => {
                        let mut total = V::new(&self.0.config);
                        total.merge(v);
                        out.insert(labels.clone(), total);
                    }
                }
            }
        }
        out
    }
}

impl<S: Clone + Hash + Eq> ShardedFamily<S, Count> {
    /// A counter family.
    pub fn counters() -> Self {
        Self::with_config(())
    }

    /// Adds one to `labels`' counter.
    pub fn inc<K: LabelKey<S> + ?Sized>(&self, labels: &K) {
        self.inc_by(labels, 1);
    }

    /// Adds `n` to `labels`' counter.
    pub fn inc_by<K: LabelKey<S> + ?Sized>(&self, labels: &K, n: u64) {
        self.update(labels, |c| c.0 += n);
    }

    /// `labels`' counter over every shard (0 when never counted).
    pub fn get(&self, labels: &S) -> u64 {
        self.merged().get(labels).map_or(0, |c| c.0)
    }
}

impl<S: Clone + Hash + Eq> ShardedFamily<S, Observations> {
    /// A histogram family with these bucket upper bounds (non-finite ones dropped, `+Inf`
    /// added), as prometheus-client's `Histogram::new` makes them.
    pub fn histograms(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        Self::with_config(Buckets(bounds))
    }

    /// Observes `v` for `labels`: it counts in the first bucket whose bound is at least
    /// `v` (NaN in the last), as prometheus-client's histogram counts it.
    pub fn observe<K: LabelKey<S> + ?Sized>(&self, labels: &K, v: f64) {
        let bounds = &self.0.config.0;
        let bucket = if v.is_nan() {
            bounds.len() - 1
        } else {
            bounds
                .iter()
                .position(|b| *b >= v)
                .unwrap_or(bounds.len() - 1)
        };
        self.update(labels, |h| {
            h.sum += v;
            h.count += 1;
            h.buckets[bucket] += 1;
        });
    }
}

impl<S, V> EncodeMetric for ShardedFamily<S, V>
where
    S: Clone + Hash + Eq + EncodeLabelSet,
    V: ShardValue,
{
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        for (labels, v) in &self.merged() {
            v.encode(&self.0.config, encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        V::TYPE
    }

    fn is_empty(&self) -> bool {
        self.0.shards.iter().all(|s| lock(&s.0).is_empty())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct L {
        route: String,
    }

    fn label(r: &str) -> L {
        L { route: r.into() }
    }

    fn render(reg: &Registry) -> Vec<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, reg).unwrap();
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        // Label sets come out in hash order, in either family.
        lines.sort();
        lines
    }

    #[test]
    fn threads_recording_into_their_own_shards_encode_as_one_family_would() {
        const BOUNDS: [f64; 3] = [0.5, 1.0, 5.0];
        let (counters, histograms) = (
            ShardedFamily::<L, Count>::counters(),
            ShardedFamily::<L, Observations>::histograms(BOUNDS),
        );
        let (family, family_h) = (
            Family::<L, Counter>::default(),
            Family::<L, Histogram>::new_with_constructor(|| Histogram::new(BOUNDS)),
        );
        let values = [0.1, 0.5, 0.7, 3.0, 9.0, f64::NAN];
        std::thread::scope(|s| {
            for t in 0..4 {
                let (c, h) = (&counters, &histograms);
                s.spawn(move || {
                    for (i, v) in values.iter().enumerate() {
                        let l = label(if (i + t) % 2 == 0 { "a" } else { "b" });
                        c.inc(&l);
                        h.observe(&l, *v);
                    }
                });
            }
        });
        for t in 0..4 {
            for (i, v) in values.iter().enumerate() {
                let l = label(if (i + t) % 2 == 0 { "a" } else { "b" });
                family.get_or_create(&l).inc();
                family_h.get_or_create(&l).observe(*v);
            }
        }
        let (mut ours, mut theirs) = (Registry::default(), Registry::default());
        ours.register("requests", "Requests", counters.clone());
        ours.register("duration", "Duration", histograms.clone());
        theirs.register("requests", "Requests", family);
        theirs.register("duration", "Duration", family_h);
        assert_eq!(render(&ours), render(&theirs));
        assert_eq!(counters.get(&label("a")), 12);
        assert_eq!(counters.get(&label("c")), 0);
    }

    /// `L` borrowed, hashing as `L` does.
    #[derive(Hash)]
    struct Borrowed<'a> {
        route: &'a str,
    }

    impl Equivalent<L> for Borrowed<'_> {
        fn equivalent(&self, l: &L) -> bool {
            self.route == l.route
        }
    }

    impl LabelKey<L> for Borrowed<'_> {
        fn to_labels(&self) -> L {
            label(self.route)
        }
    }

    #[test]
    fn a_borrowed_key_records_into_the_series_of_its_labels() {
        let counters = ShardedFamily::<L, Count>::counters();
        counters.inc(&Borrowed { route: "a" });
        counters.inc(&label("a"));
        counters.inc_by(&Borrowed { route: "a" }, 3);
        counters.inc(&Borrowed { route: "b" });
        assert_eq!(counters.get(&label("a")), 5);
        assert_eq!(counters.get(&label("b")), 1);
        let mut reg = Registry::default();
        reg.register("requests", "Requests", counters.clone());
        let series: Vec<String> = render(&reg)
            .into_iter()
            .filter(|l| l.starts_with("requests_total"))
            .collect();
        assert_eq!(
            series,
            [
                "requests_total{route=\"a\"} 5",
                "requests_total{route=\"b\"} 1"
            ]
        );
    }

    #[test]
    fn an_empty_family_is_left_out_of_the_exposition() {
        let counters = ShardedFamily::<L, Count>::counters();
        let mut reg = Registry::default();
        reg.register("requests", "Requests", counters.clone());
        assert!(!render(&reg).iter().any(|l| l.contains("requests")));
        counters.inc(&label("a"));
        assert!(
            render(&reg)
                .iter()
                .any(|l| l == "requests_total{route=\"a\"} 1")
        );
    }
}
