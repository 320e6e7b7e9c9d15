use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A map whose entries expire after a fixed time to live.
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: HashMap<K, (V, Instant)>,
    hits: u64,
    misses: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache { ttl, entries: HashMap::new(), hits: 0, misses: 0 }
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.entries.insert(key, (value, Instant::now()));
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        let fresh = match self.entries.get(key) {
            Some((_, at)) => at.elapsed() < self.ttl,
            None => false,
        };
        if fresh {
            self.hits += 1;
            self.entries.get(key).map(|(v, _)| v.clone())
        } else {
            self.misses += 1;
            self.entries.remove(key);
            None
        }
    }

    pub fn purge(&mut self) -> usize {
        let ttl = self.ttl;
        let before = self.entries.len();
        self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
        before - self.entries.len()
    }

    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

pub fn get_or_compute<K, V, F>(cache: &mut TtlCache<K, V>, key: K, compute: F) -> V
where
    K: Eq + Hash + Clone,
    V: Clone,
    F: FnOnce(&K) -> V,
{
    if let Some(v) = cache.get(&key) {
        return v;
    }
    let value = compute(&key);
    cache.insert(key, value.clone());
    value
}
