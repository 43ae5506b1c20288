//! The local full-text index (tantivy) over the newest release of every
//! known package: name, description and keywords.
//!
//! The index lives in memory and is rebuilt from the store at start (20,000
//! packages take well under a second). Additions are buffered and
//! committed in batches: a search first commits what is pending, so a
//! search always sees every release inserted before it.
//!
//! Ranking: BM25 text relevance (a match in the name counts 3×, in the
//! keywords 2×, in the description 1×), then monthly downloads where known.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use semver::Version;
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, FAST, STORED, STRING, TEXT};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::release::Release;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 256;
/// Most hits one search returns.
pub const MAX_HITS: usize = 100;

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub name: String,
    pub version: String,
    pub description: String,
    pub downloads: u64,
    /// Text relevance (BM25); comparable within one index only.
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("query of {0} bytes is over the limit of {MAX_QUERY_LEN}")]
    QueryTooLong(usize),
}

struct Fields {
    name: Field,
    name_key: Field,
    description: Field,
    keywords: Field,
    version: Field,
    downloads: Field,
}

pub struct SearchIndex {
    fields: Fields,
    parser: QueryParser,
    reader: IndexReader,
    index: Index,
    writer: Mutex<Writer>,
    /// Held for the length of a commit.
    committing: Mutex<()>,
}

/// Additions waiting for a commit. The tantivy writer (a 15 MB arena and
/// a thread) exists only while a commit runs, so an idle node holds none.
struct Writer {
    /// Package name → its newest document, or `None` to drop it.
    pending: BTreeMap<String, Option<TantivyDocument>>,
    /// When the oldest and the newest uncommitted additions were made.
    first_pending: Option<Instant>,
    last_pending: Option<Instant>,
}

impl SearchIndex {
    pub fn new() -> Result<SearchIndex, IndexError> {
        let mut schema = Schema::builder();
        let fields = Fields {
            name: schema.add_text_field("name", TEXT | STORED),
            name_key: schema.add_text_field("name_key", STRING),
            description: schema.add_text_field("description", TEXT | STORED),
            keywords: schema.add_text_field("keywords", TEXT),
            version: schema.add_text_field("version", STORED),
            downloads: schema.add_u64_field("downloads", STORED | FAST),
        };
        let index = Index::create_in_ram(schema.build());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut parser = QueryParser::for_index(
            &index,
            vec![fields.name, fields.keywords, fields.description],
        );
        parser.set_field_boost(fields.name, 3.0);
        parser.set_field_boost(fields.keywords, 2.0);
        Ok(SearchIndex {
            fields,
            parser,
            reader,
            index,
            writer: Mutex::new(Writer {
                pending: BTreeMap::new(),
                first_pending: None,
                last_pending: None,
            }),
            committing: Mutex::new(()),
        })
    }

    /// Indexes `release` as its package's entry, replacing an older one.
    /// Visible to the next search.
    pub fn upsert(&self, release: &Release) {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.name, &release.name);
        doc.add_text(f.name_key, &release.name);
        doc.add_text(f.description, &release.description);
        for k in &release.keywords {
            doc.add_text(f.keywords, k);
        }
        doc.add_text(f.version, release.version.to_string());
        doc.add_u64(f.downloads, release.downloads);
        self.pend(&release.name, Some(doc));
    }

    /// Drops `name` from the index (at the next commit).
    pub fn remove(&self, name: &str) {
        self.pend(name, None);
    }

    fn pend(&self, name: &str, doc: Option<TantivyDocument>) {
        let mut w = self.lock();
        w.pending.insert(name.to_string(), doc);
        let now = Instant::now();
        w.first_pending.get_or_insert(now);
        w.last_pending = Some(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes pending additions searchable. The additions are taken out
    /// under the lock and committed outside it, so an addition made
    /// meanwhile (by the gossip validator, on an async worker) never waits
    /// for a commit; commits themselves take turns, in order.
    pub fn commit(&self) -> Result<(), IndexError> {
        let _turn = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let pending = {
            let mut w = self.lock();
            w.first_pending = None;
            w.last_pending = None;
            std::mem::take(&mut w.pending)
        };
        if !pending.is_empty() {
            // One indexing thread and tantivy's smallest arena.
            let mut writer: IndexWriter = self.index.writer_with_num_threads(1, 15_000_000)?;
            for (name, doc) in pending {
                writer.delete_term(Term::from_field_text(self.fields.name_key, &name));
                if let Some(doc) = doc {
                    writer.add_document(doc)?;
                }
            }
            writer.commit()?;
            self.reader.reload()?;
        }
        Ok(())
    }

    /// How long ago the oldest and the newest uncommitted additions were
    /// made; `None` when everything is committed.
    pub fn pending_for(&self) -> Option<(Duration, Duration)> {
        let w = self.lock();
        Some((w.first_pending?.elapsed(), w.last_pending?.elapsed()))
    }

    /// Packages indexed (after the last commit).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The best `limit` hits for `query` (any text: syntax errors in it
    /// are forgiven, terms that do not parse are dropped).
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, IndexError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(IndexError::QueryTooLong(query.len()));
        }
        self.commit()?;
        let limit = limit.clamp(1, MAX_HITS);
        let (q, _errors) = self.parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = searcher.search(&q, &TopDocs::with_limit(limit).order_by_score())?;
        let f = &self.fields;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            hits.push(Hit {
                name: text(f.name),
                version: text(f.version),
                description: text(f.description),
                downloads: doc
                    .get_first(f.downloads)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                score,
            });
        }
        rank(&mut hits);
        Ok(hits)
    }
}

/// Orders hits by relevance, then downloads: scores within 10 % of each
/// other count as a tie broken by popularity.
pub fn rank(hits: &mut [Hit]) {
    let bucket = |s: f32| (s.max(0.0).ln_1p() * 10.0) as i64;
    hits.sort_by(|a, b| {
        bucket(b.score)
            .cmp(&bucket(a.score))
            .then(b.downloads.cmp(&a.downloads))
            .then(a.name.cmp(&b.name))
    });
}

/// De-duplicates by name (the newest version and best score win) and ranks.
pub fn merge(hits: Vec<Hit>, limit: usize) -> Vec<Hit> {
    let mut by_name: BTreeMap<String, Hit> = BTreeMap::new();
    for h in hits {
        match by_name.get_mut(&h.name) {
            Some(have) => {
                let newer = |a: &str, b: &str| match (Version::parse(a), Version::parse(b)) {
                    (Ok(a), Ok(b)) => a > b,
                    _ => false,
                };
                if newer(&h.version, &have.version) {
                    have.version = h.version.clone();
                    have.description = h.description.clone();
                }
                have.score = have.score.max(h.score);
                have.downloads = have.downloads.max(h.downloads);
            }
            None => {
                by_name.insert(h.name.clone(), h);
            }
        }
    }
    let mut out: Vec<Hit> = by_name.into_values().collect();
    rank(&mut out);
    out.truncate(limit);
    out
}

/// A peer's search answer: JSON hits, at most `limit` kept, those with
/// invalid names, oversized descriptions or non-finite scores dropped.
/// `None` when the answer is not a list of hits at all.
pub fn decode_hits(bytes: &[u8], limit: usize) -> Option<Vec<Hit>> {
    let mut hits: Vec<Hit> = serde_json::from_slice(bytes).ok()?;
    hits.truncate(limit);
    hits.retain(|h| {
        crate::manifest::valid_name(&h.name) && h.description.len() <= 4096 && h.score.is_finite()
    });
    Some(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str) -> Release {
        let manifest = crate::Manifest {
            name: name.into(),
            version: semver::Version::new(1, 0, 0),
            description: format!("the {name} package"),
            keywords: vec![],
            license: "MIT".into(),
            dependencies: Default::default(),
        };
        Release::new(&manifest, name.as_bytes(), 0)
    }

    #[test]
    fn additions_never_wait_for_a_commit_in_progress() {
        let index = std::sync::Arc::new(SearchIndex::new().unwrap());
        index.upsert(&release("first"));
        // A commit in progress holds its turn; an addition and the
        // commit timer's check go through meanwhile.
        let turn = index.committing.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = index.clone();
        std::thread::spawn(move || {
            other.upsert(&release("second"));
            let _ = tx.send(other.pending_for().is_some());
        });
        let pending = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(pending, Ok(true), "the addition waited for the commit");
        drop(turn);
        // The next search commits both.
        assert_eq!(index.search("second", 10).unwrap().len(), 1);
        assert_eq!(index.search("first", 10).unwrap().len(), 1);
        assert!(index.pending_for().is_none());
    }
}
