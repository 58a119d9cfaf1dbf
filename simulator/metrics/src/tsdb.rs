//! A small in-memory time-series store: the simulator's own samples, kept
//! for a retention window, for its Prometheus-compatible query endpoint.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

/// The bits of the NaN Prometheus writes as a staleness marker: the
/// sample after the last one of a series that went away.
const STALE_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker, as a sample value.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_BITS)
}

/// Whether a sample value is a staleness marker (not any other NaN).
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_BITS
}

/// A series' labels, sorted, `__name__` included.
pub type Labels = Arc<[(String, String)]>;

/// One series and its samples, oldest first.
#[derive(Debug, Clone)]
pub struct Series {
    /// The labels.
    pub labels: Labels,
    /// (milliseconds since the epoch, value).
    pub samples: VecDeque<(i64, f64)>,
}

/// The store.
#[derive(Debug, Default)]
pub struct Tsdb {
    index: HashMap<Labels, usize>,
    /// Series in insertion order. Each is shared with the snapshots
    /// queries read, and copied on its next write while one is.
    pub series: Vec<Arc<Series>>,
    retention_ms: i64,
}

impl Tsdb {
    /// A store keeping samples for `retention_ms`.
    pub fn new(retention_ms: i64) -> Self {
        Self {
            retention_ms,
            ..Self::default()
        }
    }

    /// Labels from pairs, sorted.
    pub fn labels(name: &str, pairs: &[(&str, &str)]) -> Labels {
        let mut map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.insert("__name__".into(), name.to_owned());
        map.into_iter().collect::<Vec<_>>().into()
    }

    /// Appends a sample, dropping what is older than the retention.
    pub fn append(&mut self, labels: &Labels, time_ms: i64, value: f64) {
        let id = self.id(labels);
        self.append_id(id, time_ms, value);
    }

    /// The id of the series with `labels`, made when new. Ids stay valid
    /// for the store's life (series are never removed, only their old
    /// samples), so a writer can keep them and skip hashing labels.
    pub fn id(&mut self, labels: &Labels) -> usize {
        if let Some(i) = self.index.get(labels) {
            return *i;
        }
        self.series.push(Arc::new(Series {
            labels: labels.clone(),
            samples: VecDeque::new(),
        }));
        self.index.insert(labels.clone(), self.series.len() - 1);
        self.series.len() - 1
    }

    /// Appends a sample to the series `id` (from [`Tsdb::id`]).
    pub fn append_id(&mut self, id: usize, time_ms: i64, value: f64) {
        let Some(series) = self.series.get_mut(id) else {
            return;
        };
        let samples = &mut Arc::make_mut(series).samples;
        samples.push_back((time_ms, value));
        while samples
            .front()
            .is_some_and(|(t, _)| *t < time_ms - self.retention_ms)
        {
            samples.pop_front();
        }
    }

    /// The store as it is now, for a query to read without holding the
    /// writer up: the series are shared, not copied (a series written
    /// while the snapshot lives is copied then, once).
    pub fn snapshot(&self) -> Self {
        Self {
            index: HashMap::new(),
            series: self.series.clone(),
            retention_ms: self.retention_ms,
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}
