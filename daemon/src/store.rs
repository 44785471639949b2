//! The SQLite store: the library of shared files, its FTS5 index, the
//! node's guard list, the downloads in progress (their meaning is
//! `crate::download`'s), and the tables later layers fill (peers,
//! reputation).
//!
//! **Invariant:** only the daemon touches SQLite, and only through this
//! module. The database runs in WAL mode with `synchronous=FULL`, one
//! transaction per shared file, so a SIGKILL at any moment loses at
//! most the transaction in flight and never corrupts what was committed.
//! Migrations are keyed on `PRAGMA user_version`.
//!
//! **Invariant:** query text never reaches FTS5 syntax: [`fts_query`] keeps
//! only alphanumeric tokens and quotes each one.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};

use veil_core::content::ContentId;
use veil_core::identity::{NodeId, PublisherId};
use veil_core::node::GuardRecord;
use veil_core::rating::SignedRating;
use veil_core::record::SignedRecord;
use veil_core::search::{Query, Standing};
use veil_core::transfer::Bitfield;

use crate::api::{FindHit, LibraryEntry};

/// Most relays kept in the `peers` table.
pub const MAX_STORED_PEERS: usize = 256;

/// A relay this node reached, as the `peers` table keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeer {
    pub id: NodeId,
    /// Its signed descriptor, as received.
    pub descriptor: Vec<u8>,
    /// The address we dialled and reached it at.
    pub addr: SocketAddr,
}

/// Each entry migrates from `user_version == index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the library, its full-text index, and tables for later layers.
    r#"
    CREATE TABLE files (
        id          INTEGER PRIMARY KEY,
        path        TEXT NOT NULL UNIQUE,
        content_id  BLOB NOT NULL CHECK (length(content_id) = 32),
        size        INTEGER NOT NULL,
        mtime_ns    INTEGER NOT NULL,
        name        TEXT NOT NULL,
        keywords    TEXT NOT NULL,
        outboard    BLOB NOT NULL,
        record      BLOB NOT NULL,
        expires     INTEGER NOT NULL,
        shared_at   INTEGER NOT NULL
    );
    CREATE INDEX files_by_content ON files(content_id);
    CREATE VIRTUAL TABLE files_fts USING fts5(
        name, keywords,
        content = 'files', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER files_ai AFTER INSERT ON files BEGIN
        INSERT INTO files_fts(rowid, name, keywords) VALUES (new.id, new.name, new.keywords);
    END;
    CREATE TRIGGER files_ad AFTER DELETE ON files BEGIN
        INSERT INTO files_fts(files_fts, rowid, name, keywords)
            VALUES ('delete', old.id, old.name, old.keywords);
    END;
    CREATE TRIGGER files_au AFTER UPDATE ON files BEGIN
        INSERT INTO files_fts(files_fts, rowid, name, keywords)
            VALUES ('delete', old.id, old.name, old.keywords);
        INSERT INTO files_fts(rowid, name, keywords) VALUES (new.id, new.name, new.keywords);
    END;

    CREATE TABLE peers (
        node_id        BLOB PRIMARY KEY CHECK (length(node_id) = 32),
        descriptor     BLOB NOT NULL,
        address        TEXT,
        first_seen     INTEGER NOT NULL,
        last_seen      INTEGER NOT NULL,
        last_reached   INTEGER,
        failures       INTEGER NOT NULL DEFAULT 0,
        guard_rank     INTEGER
    );
    CREATE TABLE downloads (
        content_id     BLOB PRIMARY KEY CHECK (length(content_id) = 32),
        size           INTEGER NOT NULL,
        name           TEXT NOT NULL,
        dest_path      TEXT NOT NULL,
        pieces         BLOB NOT NULL,
        state          TEXT NOT NULL,
        created        INTEGER NOT NULL,
        updated        INTEGER NOT NULL
    );
    CREATE TABLE reputation (
        key            BLOB PRIMARY KEY,
        kind           TEXT NOT NULL,
        good_pieces    INTEGER NOT NULL DEFAULT 0,
        bad_pieces     INTEGER NOT NULL DEFAULT 0,
        stalls         INTEGER NOT NULL DEFAULT 0,
        updated        INTEGER NOT NULL
    );
    "#,
    // 1 -> 2: the ordered guard list (first = primary), with each guard's
    // descriptor so a restarted node can reach it before it hears of it
    // again.
    r#"
    CREATE TABLE guards (
        position    INTEGER PRIMARY KEY,
        node_id     BLOB NOT NULL UNIQUE CHECK (length(node_id) = 32),
        descriptor  BLOB NOT NULL,
        added_ms    INTEGER NOT NULL
    );
    "#,
    // 2 -> 3: records held for others as an index holder (bounded by the
    // node's limits; only checked records are ever written), and what this
    // node knows of publisher pseudonyms: when it first saw each (its own
    // clock) and the standing each earned.
    r#"
    CREATE TABLE index_records (
        publisher   BLOB NOT NULL CHECK (length(publisher) = 32),
        content_id  BLOB NOT NULL CHECK (length(content_id) = 32),
        record      BLOB NOT NULL,
        expires     INTEGER NOT NULL,
        PRIMARY KEY (publisher, content_id)
    );
    CREATE TABLE publishers (
        id             BLOB PRIMARY KEY CHECK (length(id) = 32),
        first_seen_ms  INTEGER NOT NULL,
        standing       INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 3 -> 4: which pseudonyms signed records for which content in this
    // node's search results, so that `veil rate` can reach them.
    r#"
    CREATE TABLE result_publishers (
        content_id  BLOB NOT NULL CHECK (length(content_id) = 32),
        publisher   BLOB NOT NULL CHECK (length(publisher) = 32),
        seen_ms     INTEGER NOT NULL,
        PRIMARY KEY (content_id, publisher)
    );
    CREATE INDEX result_publishers_by_time ON result_publishers(seen_ms);
    "#,
    // 4 -> 5: ratings. The record a search showed for each content id
    // (what `veil rate` names in its rating), ratings by others seen in
    // search results (what our judgment is compared with), and our own
    // ratings (republished at start).
    r#"
    CREATE TABLE result_records (
        content_id  BLOB PRIMARY KEY CHECK (length(content_id) = 32),
        record      BLOB NOT NULL,
        seen_ms     INTEGER NOT NULL
    );
    CREATE INDEX result_records_by_time ON result_records(seen_ms);
    CREATE TABLE result_ratings (
        content_id  BLOB NOT NULL CHECK (length(content_id) = 32),
        rater       BLOB NOT NULL CHECK (length(rater) = 32),
        rating      BLOB NOT NULL,
        seen_ms     INTEGER NOT NULL,
        PRIMARY KEY (content_id, rater)
    );
    CREATE INDEX result_ratings_by_time ON result_ratings(seen_ms);
    CREATE TABLE my_ratings (
        content_id  BLOB PRIMARY KEY CHECK (length(content_id) = 32),
        rating      BLOB NOT NULL,
        created     INTEGER NOT NULL
    );
    "#,
    // 5 -> 6: pairs that only a download's own searches for providers
    // brought (never a search of the user's): `veil rate ... fake` reaches
    // them, `good` does not (anyone can sign a record of a popular id and
    // slip it into those answers, to be credited by the user's approval).
    r#"
    ALTER TABLE result_publishers ADD COLUMN from_download INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// What a search showed of one content id: one record's encoding, and
/// the encodings of others' ratings of it.
pub type Shown = (Option<Vec<u8>>, Vec<Vec<u8>>);

/// Most (content, publisher) pairs remembered from search results; the
/// oldest go first.
pub const MAX_RESULT_PUBLISHERS: i64 = 200_000;

/// Most tokens a query may have.
pub const MAX_QUERY_TOKENS: usize = 16;
/// Longest token kept (in chars).
pub const MAX_TOKEN_CHARS: usize = 64;

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// What is stored for one shared file.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub path: String,
    pub content_id: [u8; 32],
    pub size: u64,
    pub mtime_ns: i64,
    pub name: String,
    pub keywords: Vec<String>,
    pub outboard: Vec<u8>,
    pub record: Vec<u8>,
    pub expires: u64,
    pub shared_at: u64,
}

/// One download as stored. `crate::download` alone gives the fields their
/// meaning (the state names, the bitfield, the paths); the store only keeps
/// them, and adds bits to `pieces` without ever clearing one
/// ([`Store::mark_piece`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadRow {
    pub content_id: ContentId,
    pub size: u64,
    pub name: String,
    pub dest_path: String,
    /// The bitfield of pieces held, in `Bitfield::as_bytes` form.
    pub pieces: Vec<u8>,
    pub state: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub updated: u64,
}

impl FileRow {
    /// The public view of this row.
    pub fn entry(&self) -> LibraryEntry {
        LibraryEntry {
            id: hex::encode(self.content_id),
            size: self.size,
            name: self.name.clone(),
            path: self.path.clone(),
            keywords: self.keywords.clone(),
            shared_at: self.shared_at,
            record_expires: self.expires,
        }
    }
}

impl Store {
    /// Open (creating if needed) and migrate.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("database {} refused WAL mode ({mode})", path.display());
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            bail!(
                "database schema version {version} is newer than this veild understands ({}); upgrade veild",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("migration {i} -> {} failed", i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Schema version after migration.
    pub fn schema_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Size and mtime recorded for `path`, if shared.
    pub fn file_stamp(&self, path: &str) -> anyhow::Result<Option<(u64, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT size, mtime_ns FROM files WHERE path = ?1",
                [path],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// Insert or replace a shared file, durably. Returns true if it replaced
    /// an older row.
    pub fn upsert_file(&mut self, row: &FileRow) -> anyhow::Result<bool> {
        let tx = self.conn.transaction()?;
        let existed: bool = tx
            .query_row("SELECT 1 FROM files WHERE path = ?1", [&row.path], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        let keywords = row.keywords.join(" ");
        // One statement for both cases; the update path fires the FTS
        // update trigger.
        tx.execute(
            "INSERT INTO files (path, content_id, size, mtime_ns, name, keywords, outboard,
                record, expires, shared_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)
             ON CONFLICT(path) DO UPDATE SET content_id=excluded.content_id,
                size=excluded.size, mtime_ns=excluded.mtime_ns, name=excluded.name,
                keywords=excluded.keywords, outboard=excluded.outboard,
                record=excluded.record, expires=excluded.expires, shared_at=excluded.shared_at",
            params![
                row.path,
                row.content_id.as_slice(),
                row.size as i64,
                row.mtime_ns,
                row.name,
                keywords,
                row.outboard,
                row.record,
                row.expires as i64,
                row.shared_at as i64
            ],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    /// Remove `path`, or every file under it if it names a directory.
    pub fn remove_path(&mut self, path: &str) -> anyhow::Result<u64> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let n = self.conn.execute(
            "DELETE FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            params![path, prefix],
        )?;
        Ok(n as u64)
    }

    /// Every shared file, by path.
    pub fn library(&self) -> anyhow::Result<Vec<FileRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT path, content_id, size, mtime_ns, name, keywords, outboard, record, expires,
                shared_at FROM files ORDER BY path",
        )?;
        let rows = stmt.query_map([], row_from_sql)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// Number of shared files and their total size.
    pub fn totals(&self) -> anyhow::Result<(u64, u64)> {
        Ok(self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM files",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Search the library with the same matcher that answers remote
    /// queries ([`Query::matches`]): FTS5 finds candidates (prefix terms,
    /// a superset), core's matcher decides. Any text is safe: see
    /// [`fts_query`].
    pub fn find(&self, words: &str, limit: u32) -> anyhow::Result<Vec<FindHit>> {
        let Ok(matcher) = Query::parse(words) else {
            return Ok(Vec::new());
        };
        if let Query::Content(id) = &matcher {
            let mut stmt = self.conn.prepare(
                "SELECT content_id, size, name, path FROM files WHERE content_id = ?1
                    ORDER BY path LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id.as_bytes().as_slice(), limit], |r| {
                Ok(FindHit {
                    id: hex::encode(r.get::<_, Vec<u8>>(0)?),
                    size: r.get::<_, i64>(1)? as u64,
                    name: r.get(2)?,
                    path: r.get(3)?,
                })
            })?;
            return rows.collect::<Result<Vec<_>, _>>().map_err(Into::into);
        }
        let Some(query) = fts_query(words) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare(
            "SELECT f.content_id, f.size, f.name, f.path, f.keywords FROM files_fts
                JOIN files f ON f.id = files_fts.rowid
                WHERE files_fts MATCH ?1 ORDER BY rank, f.path",
        )?;
        let rows = stmt.query_map(params![query], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, size, name, path, keywords) = r?;
            let Ok(id) = <[u8; 32]>::try_from(id) else {
                continue;
            };
            let keywords: Vec<String> = keywords.split_whitespace().map(str::to_owned).collect();
            if !matcher.matches_parts(&keywords, &ContentId::from_bytes(id)) {
                continue;
            }
            out.push(FindHit {
                id: hex::encode(id),
                size,
                name,
                path,
            });
            if out.len() >= limit as usize {
                break;
            }
        }
        Ok(out)
    }

    /// Replace the records held for others with `records`, atomically.
    pub fn save_index(&mut self, records: &[SignedRecord]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM index_records", [])?;
        {
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO index_records (publisher, content_id, record, expires)
                    VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in records {
                let expires = i64::try_from(r.record().expires).unwrap_or(i64::MAX);
                stmt.execute(params![
                    r.publisher().id().as_bytes().as_slice(),
                    r.record().content_id.as_bytes().as_slice(),
                    r.as_bytes(),
                    expires
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The records held for others, as stored (unchecked: the node checks
    /// each again when it restores them), unexpired at `now_s`.
    pub fn index(&self, now_s: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        let now = i64::try_from(now_s).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM index_records WHERE expires > ?1")?;
        let rows = stmt.query_map(params![now], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r?);
        }
        Ok(out)
    }

    /// What we know of publisher pseudonyms.
    pub fn standing(&self) -> anyhow::Result<Standing> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, first_seen_ms, standing FROM publishers")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut st = Standing::default();
        for r in rows {
            let (id, first, score) = r?;
            let (Ok(id), Ok(first)) = (<[u8; 32]>::try_from(id), u64::try_from(first)) else {
                continue;
            };
            let score = i32::try_from(score).unwrap_or(0);
            st.restore(PublisherId::from_bytes(id), first, score);
        }
        Ok(st)
    }

    /// Notes that we saw these pseudonyms at `now_ms` (the first sighting
    /// is kept).
    pub fn note_seen(&mut self, ids: &[PublisherId], now_ms: u64) -> anyhow::Result<()> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT OR IGNORE INTO publishers (id, first_seen_ms, standing) VALUES (?1, ?2, 0)",
            )?;
            for id in ids {
                stmt.execute(params![id.as_bytes().as_slice(), now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Remembers which pseudonyms signed records for which content in a
    /// search result (bounded: the oldest pairs go first).
    pub fn note_results(
        &mut self,
        pairs: &[(ContentId, PublisherId)],
        now_ms: u64,
    ) -> anyhow::Result<()> {
        self.note_pairs(pairs, now_ms, false)
    }

    /// Remembers pseudonyms that signed records of `content` in the
    /// answers to a download's own searches for providers (bounded with
    /// the search pairs; a pair a search of the user's showed stays one).
    pub fn note_download_signers(
        &mut self,
        content: &ContentId,
        signers: &[PublisherId],
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let pairs: Vec<_> = signers.iter().map(|p| (*content, *p)).collect();
        self.note_pairs(&pairs, now_ms, true)
    }

    /// Upserts result pairs (`from_download`: only a download's searches
    /// brought them, unless a search of the user's showed them already or
    /// shows them later), then drops the oldest beyond the bound.
    fn note_pairs(
        &mut self,
        pairs: &[(ContentId, PublisherId)],
        now_ms: u64,
        from_download: bool,
    ) -> anyhow::Result<()> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(if from_download {
                "INSERT INTO result_publishers (content_id, publisher, seen_ms, from_download)
                    VALUES (?1, ?2, ?3, 1)
                    ON CONFLICT(content_id, publisher) DO UPDATE SET seen_ms = ?3"
            } else {
                "INSERT INTO result_publishers (content_id, publisher, seen_ms) VALUES (?1, ?2, ?3)
                    ON CONFLICT(content_id, publisher) DO UPDATE SET seen_ms = ?3, from_download = 0"
            })?;
            for (c, p) in pairs {
                stmt.execute(params![
                    c.as_bytes().as_slice(),
                    p.as_bytes().as_slice(),
                    now
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM result_publishers WHERE rowid IN (SELECT rowid FROM result_publishers
                ORDER BY seen_ms DESC LIMIT -1 OFFSET ?1)",
            params![MAX_RESULT_PUBLISHERS],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remembers, from a search result, one record per content id and
    /// the ratings of others (bounded like the result pairs).
    pub fn note_shown(
        &mut self,
        records: &[&SignedRecord],
        ratings: &[SignedRating],
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO result_records (content_id, record, seen_ms) VALUES (?1, ?2, ?3)
                    ON CONFLICT(content_id) DO UPDATE SET record = ?2, seen_ms = ?3",
            )?;
            for r in records {
                stmt.execute(params![
                    r.record().content_id.as_bytes().as_slice(),
                    r.as_bytes(),
                    now
                ])?;
            }
            let mut stmt = tx.prepare(
                "INSERT INTO result_ratings (content_id, rater, rating, seen_ms) VALUES (?1, ?2, ?3, ?4)
                    ON CONFLICT(content_id, rater) DO UPDATE SET rating = ?3, seen_ms = ?4",
            )?;
            for r in ratings {
                stmt.execute(params![
                    r.record().content_id.as_bytes().as_slice(),
                    r.publisher().id().as_bytes().as_slice(),
                    r.as_bytes(),
                    now
                ])?;
            }
        }
        for table in ["result_records", "result_ratings"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}
                        ORDER BY seen_ms DESC LIMIT -1 OFFSET ?1)"
                ),
                params![MAX_RESULT_PUBLISHERS],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The record a search showed for `content`, and the ratings of it by
    /// others (as stored: the caller checks them).
    pub fn shown(&self, content: &ContentId) -> anyhow::Result<Shown> {
        let key = content.as_bytes().as_slice();
        let record = self
            .conn
            .query_row(
                "SELECT record FROM result_records WHERE content_id = ?1",
                params![key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?;
        let mut stmt = self
            .conn
            .prepare("SELECT rating FROM result_ratings WHERE content_id = ?1")?;
        let ratings = stmt
            .query_map(params![key], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((record, ratings))
    }

    /// Keeps our own rating of a content id (replacing an older one).
    pub fn save_my_rating(&mut self, rating: &SignedRating) -> anyhow::Result<()> {
        self.conn.execute(
            "INSERT INTO my_ratings (content_id, rating, created) VALUES (?1, ?2, ?3)
                ON CONFLICT(content_id) DO UPDATE SET rating = ?2, created = ?3",
            params![
                rating.record().content_id.as_bytes().as_slice(),
                rating.as_bytes(),
                i64::try_from(rating.record().created).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// Our own ratings, newest first, as stored (the caller checks
    /// them); those created before `since` (Unix seconds: expired) are
    /// deleted first.
    pub fn my_ratings(&mut self, since: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        self.conn.execute(
            "DELETE FROM my_ratings WHERE created < ?1",
            params![i64::try_from(since).unwrap_or(i64::MAX)],
        )?;
        let mut stmt = self
            .conn
            .prepare("SELECT rating FROM my_ratings ORDER BY created DESC")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The pseudonyms that signed records for `content` in our search
    /// results.
    pub fn publishers_of(
        &self,
        content: &ContentId,
        with_download: bool,
    ) -> anyhow::Result<Vec<PublisherId>> {
        let mut stmt = self.conn.prepare(
            "SELECT publisher FROM result_publishers
                WHERE content_id = ?1 AND (from_download = 0 OR ?2)
                ORDER BY publisher",
        )?;
        let rows = stmt.query_map(params![content.as_bytes().as_slice(), with_download], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(id) = <[u8; 32]>::try_from(r?) {
                out.push(PublisherId::from_bytes(id));
            }
        }
        Ok(out)
    }

    /// Adds `delta` to a pseudonym's standing (the transfer code reports a
    /// verified, kept download or a decoy), within ±1000.
    pub fn adjust_standing(
        &mut self,
        id: &PublisherId,
        delta: i32,
        now_ms: u64,
    ) -> anyhow::Result<()> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT INTO publishers (id, first_seen_ms, standing) VALUES (?1, ?2, max(-1000, min(1000, ?3)))
                ON CONFLICT(id) DO UPDATE SET standing = max(-1000, min(1000, standing + ?3))",
            params![id.as_bytes().as_slice(), now, i64::from(delta)],
        )?;
        Ok(())
    }

    /// Replace the stored guard list with `guards`, in order, durably and
    /// atomically (a crash leaves the old list or the new one).
    pub fn save_guards(&mut self, guards: &[GuardRecord]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM guards", [])?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO guards (position, node_id, descriptor, added_ms)
                    VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, g) in guards.iter().enumerate() {
                let added = i64::try_from(g.added_ms).context("guard added_ms out of range")?;
                stmt.execute(params![
                    i as i64,
                    g.id.as_bytes().as_slice(),
                    g.descriptor,
                    added
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored guard list, primary first. Rows that cannot be a guard
    /// (a negative time) are skipped; the node checks each descriptor again
    /// when it restores them.
    pub fn guards(&self) -> anyhow::Result<Vec<GuardRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT node_id, descriptor, added_ms FROM guards ORDER BY position")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, descriptor, added_ms) = r?;
            let (Ok(id), Ok(added_ms)) = (<[u8; 32]>::try_from(id), u64::try_from(added_ms)) else {
                continue;
            };
            out.push(GuardRecord {
                id: NodeId::from_bytes(id),
                descriptor,
                added_ms,
            });
        }
        Ok(out)
    }

    /// Record relays this node reached at `addr` now (outbound links
    /// that authenticated), with their descriptors: a later start dials
    /// them as extra seeds. At most [`MAX_STORED_PEERS`] are kept, the
    /// ones reached longest ago dropped first.
    pub fn save_peers(&mut self, reached: &[StoredPeer], now_s: u64) -> anyhow::Result<()> {
        let now = i64::try_from(now_s).context("time out of range")?;
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO peers (node_id, descriptor, address, first_seen, last_seen, last_reached)
                    VALUES (?1, ?2, ?3, ?4, ?4, ?4)
                    ON CONFLICT(node_id) DO UPDATE SET descriptor = ?2, address = ?3,
                        last_seen = ?4, last_reached = ?4, failures = 0",
            )?;
            for p in reached {
                stmt.execute(params![
                    p.id.as_bytes().as_slice(),
                    p.descriptor,
                    p.addr.to_string(),
                    now
                ])?;
            }
        }
        tx.execute(
            "DELETE FROM peers WHERE node_id NOT IN
                (SELECT node_id FROM peers ORDER BY last_reached DESC LIMIT ?1)",
            params![MAX_STORED_PEERS as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Addresses of relays reached since `since_s`, most recently reached
    /// first, at most `limit`.
    pub fn peer_seeds(&self, since_s: u64, limit: usize) -> anyhow::Result<Vec<SocketAddr>> {
        let since = i64::try_from(since_s).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT address FROM peers WHERE last_reached >= ?1 AND address IS NOT NULL
                ORDER BY last_reached DESC, random() LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            // A row that does not parse is skipped, not fatal.
            if let Ok(addr) = r?.parse() {
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// Register a download. False (and nothing written) if a download of
    /// that content is already registered.
    pub fn insert_download(&mut self, row: &DownloadRow) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "INSERT INTO downloads (content_id, size, name, dest_path, pieces, state, created,
                updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                ON CONFLICT(content_id) DO NOTHING",
            params![
                row.content_id.as_bytes().as_slice(),
                sql_int(row.size, "download size")?,
                row.name,
                row.dest_path,
                row.pieces,
                row.state,
                sql_int(row.created, "download created")?,
                sql_int(row.updated, "download updated")?
            ],
        )?;
        Ok(n == 1)
    }

    /// The download of `id`, if registered.
    pub fn download(&self, id: &ContentId) -> anyhow::Result<Option<DownloadRow>> {
        let raw = self
            .conn
            .query_row(
                "SELECT content_id, size, name, dest_path, pieces, state, created, updated
                    FROM downloads WHERE content_id = ?1",
                params![id.as_bytes().as_slice()],
                raw_download,
            )
            .optional()?;
        raw.map(download_from_raw).transpose()
    }

    /// Every registered download, oldest first.
    pub fn downloads(&self) -> anyhow::Result<Vec<DownloadRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT content_id, size, name, dest_path, pieces, state, created, updated
                FROM downloads ORDER BY created, content_id",
        )?;
        let rows = stmt.query_map([], raw_download)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(download_from_raw(r?)?);
        }
        Ok(out)
    }

    /// Add piece `index` to the stored bitfield of `id`, durably, in one
    /// transaction that reads the stored bitfield, sets the bit and writes
    /// it back: bits are only ever added, whoever else records pieces.
    /// Returns the new stored form, or None if `id` is not registered. A
    /// stored bitfield that does not fit the size, or an index past the
    /// last piece, is an error and changes nothing.
    pub fn mark_piece(
        &mut self,
        id: &ContentId,
        index: u64,
        now: u64,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        self.mark_pieces(id, &[index], now)
    }

    /// [`Store::mark_piece`] for several pieces in one transaction (one
    /// commit, so one sync, for all of them): all are added or none.
    pub fn mark_pieces(
        &mut self,
        id: &ContentId,
        indices: &[u64],
        now: u64,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let tx = self.conn.transaction()?;
        let stored = tx
            .query_row(
                "SELECT size, pieces FROM downloads WHERE content_id = ?1",
                params![id.as_bytes().as_slice()],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        let Some((size, pieces)) = stored else {
            return Ok(None);
        };
        let size = u64::try_from(size).context("stored download size is negative")?;
        let mut bits = Bitfield::from_bytes(size, &pieces).context("stored bitfield")?;
        for &index in indices {
            if !bits.set(index) {
                bail!("piece {index} is past the last piece ({})", bits.pieces());
            }
        }
        tx.execute(
            "UPDATE downloads SET pieces = ?2, updated = ?3 WHERE content_id = ?1",
            params![
                id.as_bytes().as_slice(),
                bits.as_bytes(),
                sql_int(now, "download updated")?
            ],
        )?;
        tx.commit()?;
        Ok(Some(bits.as_bytes().to_vec()))
    }

    /// Set the state of `id`, and replace its bitfield if `pieces` is given
    /// (the only way bits are ever cleared), in one statement. False if
    /// `id` is not registered.
    pub fn set_download_state(
        &mut self,
        id: &ContentId,
        state: &str,
        pieces: Option<&[u8]>,
        now: u64,
    ) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "UPDATE downloads SET state = ?2, pieces = coalesce(?3, pieces), updated = ?4
                WHERE content_id = ?1",
            params![
                id.as_bytes().as_slice(),
                state,
                pieces,
                sql_int(now, "download updated")?
            ],
        )?;
        Ok(n == 1)
    }

    /// Forget the download of `id`. False if it was not registered.
    pub fn remove_download(&mut self, id: &ContentId) -> anyhow::Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM downloads WHERE content_id = ?1",
            params![id.as_bytes().as_slice()],
        )?;
        Ok(n == 1)
    }
}

/// A u64 as an SQLite integer, or an error rather than a wrap.
fn sql_int(v: u64, what: &str) -> anyhow::Result<i64> {
    i64::try_from(v).with_context(|| format!("{what} {v} does not fit in SQLite"))
}

type RawDownload = (Vec<u8>, i64, String, String, Vec<u8>, String, i64, i64);

fn raw_download(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDownload> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn download_from_raw(raw: RawDownload) -> anyhow::Result<DownloadRow> {
    let (id, size, name, dest_path, pieces, state, created, updated) = raw;
    let id = <[u8; 32]>::try_from(id)
        .map_err(|id| anyhow::anyhow!("stored content id of {} bytes", id.len()))?;
    Ok(DownloadRow {
        content_id: ContentId::from_bytes(id),
        size: u64::try_from(size).context("stored download size is negative")?,
        name,
        dest_path,
        pieces,
        state,
        created: u64::try_from(created).unwrap_or(0),
        updated: u64::try_from(updated).unwrap_or(0),
    })
}

fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let id: Vec<u8> = r.get(1)?;
    let mut content_id = [0u8; 32];
    if id.len() == 32 {
        content_id.copy_from_slice(&id);
    }
    let keywords: String = r.get(5)?;
    Ok(FileRow {
        path: r.get(0)?,
        content_id,
        size: r.get::<_, i64>(2)? as u64,
        mtime_ns: r.get(3)?,
        name: r.get(4)?,
        keywords: keywords.split_whitespace().map(str::to_owned).collect(),
        outboard: r.get(6)?,
        record: r.get(7)?,
        expires: r.get::<_, i64>(8)? as u64,
        shared_at: r.get::<_, i64>(9)? as u64,
    })
}

/// Turn arbitrary user or peer text into a safe FTS5 query: split on
/// anything that is not alphanumeric, lowercase, keep at most
/// [`MAX_QUERY_TOKENS`] tokens of at most [`MAX_TOKEN_CHARS`] chars, quote
/// each as a prefix term and AND them. Returns `None` when nothing
/// searchable is left. No FTS5 operator (`OR`, `NEAR(`, `*`, `"`, `:`, `^`)
/// survives: every token is a quoted string of letters and digits.
pub fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_QUERY_TOKENS)
        .map(|t| {
            let t: String = t.chars().take(MAX_TOKEN_CHARS).collect();
            format!("\"{}\"*", t.to_lowercase())
        })
        .collect();
    if terms.is_empty() {
        None
    } else {
        Some(terms.join(" AND "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, name: &str, id: u8) -> FileRow {
        FileRow {
            path: path.into(),
            content_id: [id; 32],
            size: 10,
            mtime_ns: 1,
            name: name.into(),
            keywords: veil_core::record::keywords_from_name(name),
            outboard: vec![],
            record: vec![1, 2, 3],
            expires: 100,
            shared_at: 1,
        }
    }

    #[test]
    fn hostile_queries_are_safe() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::open(&tmp.path().join("db")).unwrap();
        s.upsert_file(&row("/a/zebra_song.txt", "zebra_song.txt", 1))
            .unwrap();
        s.upsert_file(&row("/a/or near.txt", "or near.txt", 2))
            .unwrap();
        for q in [
            "\"",
            "*",
            "NEAR(",
            "OR",
            "zebra OR",
            "\"zebra",
            "zebra*",
            "name:zebra",
            "^zebra",
            "a AND",
            "NOT",
            ")",
            "'; DROP TABLE files; --",
            "NEAR(zebra song, 2)",
            "",
        ] {
            s.find(q, 50)
                .unwrap_or_else(|e| panic!("query {q:?} failed: {e:#}"));
        }
        assert_eq!(s.find("zebra", 50).unwrap().len(), 1);
        assert_eq!(s.find("ZEBRA song", 50).unwrap().len(), 1);
        assert!(
            s.find("ZEB", 50).unwrap().is_empty(),
            "whole words, as remote queries"
        );
        assert_eq!(s.find("NEAR(", 50).unwrap().len(), 1);
        assert_eq!(s.find("OR", 50).unwrap()[0].name, "or near.txt");
        assert!(s.find("\"", 50).unwrap().is_empty());
    }

    #[test]
    fn local_find_and_the_remote_matcher_agree() {
        use veil_core::identity::Pseudonym;
        use veil_core::pow::PowParams;
        use veil_core::record::{ContentRecord, keywords_from_name};
        let p = Pseudonym::from_key(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
            PowParams::TESTNET,
        );
        let names = [
            "Café del Mar – Volume 2.flac",
            "cafe_racer.mp4",
            "ÜBER alles (live).ogg",
            "über-live-2024.ogg",
            "Song of the Sea.mkv",
            "song.txt",
            "日本語 テキスト.txt",
            "a.b.c.2024.x264.mkv",
            "Volume 10 of 12.pdf",
        ];
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::open(&tmp.path().join("db")).unwrap();
        let mut records = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let r = ContentRecord {
                content_id: ContentId::from_bytes([i as u8 + 1; 32]),
                size: 10,
                name: (*name).into(),
                keywords: keywords_from_name(name),
                media_type: None,
                created: 1_800_000_000,
                expires: 1_800_003_600,
            }
            .sign(&p)
            .unwrap();
            let mut f = row(&format!("/lib/{i}"), name, i as u8 + 1);
            f.keywords = r.record().keywords.clone();
            f.record = r.to_bytes();
            s.upsert_file(&f).unwrap();
            records.push(r);
        }
        for q in [
            "café",
            "cafe",
            "CAFÉ del",
            "über live",
            "UBER",
            "song",
            "song sea",
            "日本語",
            "2024",
            "volume",
            "volume 10",
            "x264 mkv",
            "of",
            "nothing here",
            &ContentId::from_bytes([5; 32]).to_hex(),
        ] {
            let mut local: Vec<String> =
                s.find(q, 100).unwrap().into_iter().map(|h| h.id).collect();
            local.sort();
            let query = Query::parse(q).unwrap();
            let mut remote: Vec<String> = records
                .iter()
                .filter(|r| query.matches(r.record()))
                .map(|r| r.record().content_id.to_hex())
                .collect();
            remote.sort();
            assert_eq!(local, remote, "query {q:?}");
        }
    }

    #[test]
    fn index_records_and_standing_persist() {
        use veil_core::identity::Pseudonym;
        use veil_core::pow::PowParams;
        use veil_core::record::{ContentRecord, keywords_from_name};
        let p = Pseudonym::from_key(
            ed25519_dalek::SigningKey::from_bytes(&[4; 32]),
            PowParams::TESTNET,
        );
        let rec = |i: u8, expires: u64| {
            ContentRecord {
                content_id: ContentId::from_bytes([i; 32]),
                size: 1,
                name: format!("file {i}"),
                keywords: keywords_from_name(&format!("file {i}")),
                media_type: None,
                created: 1_800_000_000,
                expires,
            }
            .sign(&p)
            .unwrap()
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("db");
        {
            let mut s = Store::open(&path).unwrap();
            s.save_index(&[rec(1, 1_800_003_600), rec(2, 1_800_000_100)])
                .unwrap();
            let id = p.publisher().id();
            s.note_seen(&[id], 5).unwrap();
            s.note_seen(&[id], 9).unwrap();
            s.adjust_standing(&id, -3, 9).unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.index(1_800_000_200).unwrap(),
            vec![rec(1, 1_800_003_600).to_bytes()]
        );
        let st = s.standing().unwrap();
        let id = p.publisher().id();
        assert_eq!(st.first_seen(&id), Some(5), "the first sighting is kept");
        assert_eq!(st.score(&id), -3);
        let mut s = s;
        let c = ContentId::from_bytes([9; 32]);
        s.note_results(&[(c, id), (c, id)], 10).unwrap();
        assert_eq!(s.publishers_of(&c, false).unwrap(), vec![id]);
        assert!(
            s.publishers_of(&ContentId::from_bytes([8; 32]), true)
                .unwrap()
                .is_empty()
        );
        // A signer only a download's searches for providers brought is
        // reached by a fake verdict, not by a good one; one a search of
        // the user's showed stays reached by both.
        let other = PublisherId::from_bytes([7; 32]);
        s.note_download_signers(&c, &[other, id], 11).unwrap();
        assert_eq!(s.publishers_of(&c, false).unwrap(), vec![id]);
        let mut both = vec![id, other];
        both.sort();
        assert_eq!(s.publishers_of(&c, true).unwrap(), both);
        // Once a search of the user's shows it too, it is a search's.
        s.note_results(&[(c, other)], 12).unwrap();
        assert_eq!(s.publishers_of(&c, false).unwrap(), both);
    }

    #[test]
    fn reopen_keeps_data_and_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        {
            let mut s = Store::open(&db).unwrap();
            s.upsert_file(&row("/x/a.txt", "a.txt", 1)).unwrap();
            assert!(s.upsert_file(&row("/x/a.txt", "a.txt", 2)).unwrap());
        }
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let lib = s.library().unwrap();
        assert_eq!(lib.len(), 1);
        assert_eq!(lib[0].content_id, [2; 32]);
        assert_eq!(s.find("txt", 10).unwrap().len(), 1);
        s.upsert_file(&row("/x/sub/b.txt", "b.txt", 3)).unwrap();
        s.upsert_file(&row("/xy/c.txt", "c.txt", 4)).unwrap();
        assert_eq!(s.remove_path("/x").unwrap(), 2);
        assert_eq!(s.library().unwrap().len(), 1);
        assert!(s.find("a", 10).unwrap().is_empty());
    }

    fn guard(i: u8, added_ms: u64) -> GuardRecord {
        GuardRecord {
            id: NodeId::from_bytes([i; 32]),
            descriptor: vec![i; 40 + usize::from(i)],
            added_ms,
        }
    }

    #[test]
    fn guards_round_trip_in_order_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        let first = vec![guard(9, 1_700_000_000_000), guard(2, 5), guard(7, 0)];
        {
            let mut s = Store::open(&db).unwrap();
            assert!(s.guards().unwrap().is_empty());
            s.save_guards(&first).unwrap();
            assert_eq!(s.guards().unwrap(), first);
        }
        // Survives a reopen, order included.
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.guards().unwrap(), first);
        // A save replaces the whole list.
        let second = vec![guard(7, 0), guard(3, 8)];
        s.save_guards(&second).unwrap();
        assert_eq!(s.guards().unwrap(), second);
        s.save_guards(&[]).unwrap();
        assert!(s.guards().unwrap().is_empty());
        // A list the table refuses (the same node twice) leaves the old one.
        s.save_guards(&second).unwrap();
        assert!(s.save_guards(&[guard(1, 0), guard(1, 1)]).is_err());
        assert_eq!(s.guards().unwrap(), second);
        // Values u64 cannot carry into SQLite are an error, not a wrap.
        assert!(s.save_guards(&[guard(1, u64::MAX)]).is_err());
        assert_eq!(s.guards().unwrap(), second);
    }

    fn peer(i: u16, port: u16) -> StoredPeer {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&i.to_be_bytes());
        StoredPeer {
            id: NodeId::from_bytes(id),
            descriptor: vec![7; 50],
            addr: SocketAddr::from(([127, (i % 250) as u8, 0, 1], port)),
        }
    }

    #[test]
    fn reached_peers_persist_newest_first_bounded_and_updated() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        {
            let mut s = Store::open(&db).unwrap();
            assert!(s.peer_seeds(0, 10).unwrap().is_empty());
            s.save_peers(&[peer(1, 7001), peer(2, 7002)], 100).unwrap();
            s.save_peers(&[peer(3, 7003)], 200).unwrap();
        }
        let mut s = Store::open(&db).unwrap();
        let seeds = s.peer_seeds(0, 10).unwrap();
        assert_eq!(seeds[0], peer(3, 7003).addr);
        assert_eq!(seeds.len(), 3);
        // Reached again at a new port: one row, the new address, newest.
        s.save_peers(&[peer(1, 9001)], 300).unwrap();
        let seeds = s.peer_seeds(0, 10).unwrap();
        assert_eq!(seeds.len(), 3);
        assert_eq!(seeds[0], peer(1, 9001).addr);
        // Too old, or past the limit, is left out.
        assert_eq!(s.peer_seeds(250, 10).unwrap(), vec![peer(1, 9001).addr]);
        assert_eq!(s.peer_seeds(0, 1).unwrap().len(), 1);
        // The table never holds more than MAX_STORED_PEERS: the ones
        // reached longest ago go first.
        let many: Vec<StoredPeer> = (10..300).map(|i| peer(i, 8000)).collect();
        s.save_peers(&many, 400).unwrap();
        s.save_peers(&[peer(7, 8100)], 500).unwrap();
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM peers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MAX_STORED_PEERS as i64);
        assert_eq!(s.peer_seeds(450, 10).unwrap(), vec![peer(7, 8100).addr]);
        // A row whose address does not parse is skipped.
        s.conn
            .execute(
                "UPDATE peers SET address = 'junk', last_reached = 999 WHERE node_id = ?1",
                params![peer(20, 0).id.as_bytes().as_slice()],
            )
            .unwrap();
        assert_eq!(s.peer_seeds(450, 10).unwrap(), vec![peer(7, 8100).addr]);
    }

    fn download_row(id: u8, size: u64) -> DownloadRow {
        DownloadRow {
            content_id: ContentId::from_bytes([id; 32]),
            size,
            name: format!("file{id}"),
            dest_path: format!("/dl/file{id}"),
            pieces: Bitfield::new(size).as_bytes().to_vec(),
            state: "active".into(),
            created: u64::from(id),
            updated: u64::from(id),
        }
    }

    #[test]
    fn downloads_persist_and_pieces_only_accumulate() {
        use veil_core::transfer::PIECE_BYTES;
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        let a = download_row(1, 10 * PIECE_BYTES);
        let b = download_row(2, 3);
        {
            let mut s = Store::open(&db).unwrap();
            assert!(s.insert_download(&a).unwrap());
            assert!(s.insert_download(&b).unwrap());
            let mut again = a.clone();
            again.name = "other".into();
            assert!(!s.insert_download(&again).unwrap(), "one row per content");
            assert_eq!(s.download(&a.content_id).unwrap(), Some(a.clone()));
            s.mark_piece(&a.content_id, 9, 50).unwrap().unwrap();
            let bits = s.mark_piece(&a.content_id, 0, 51).unwrap().unwrap();
            assert_eq!(bits, vec![0b0000_0001, 0b0000_0010]);
            // Recording a held piece again changes nothing.
            assert_eq!(s.mark_piece(&a.content_id, 0, 52).unwrap(), Some(bits));
            // Past the last piece: an error, and the row is unchanged.
            assert!(s.mark_piece(&a.content_id, 10, 53).is_err());
            let unknown = ContentId::from_bytes([7; 32]);
            assert_eq!(s.mark_piece(&unknown, 0, 53).unwrap(), None);
            assert!(!s.set_download_state(&unknown, "paused", None, 53).unwrap());
        }
        // Survives a reopen.
        let mut s = Store::open(&db).unwrap();
        let got = s.download(&a.content_id).unwrap().unwrap();
        assert_eq!(got.pieces, vec![0b0000_0001, 0b0000_0010]);
        assert_eq!(got.updated, 52);
        // A state change keeps the bits unless told otherwise.
        assert!(
            s.set_download_state(&a.content_id, "paused", None, 60)
                .unwrap()
        );
        let got = s.download(&a.content_id).unwrap().unwrap();
        assert_eq!((got.state.as_str(), got.pieces.len()), ("paused", 2));
        assert!(
            s.set_download_state(&a.content_id, "failed", Some(&[0, 0]), 61)
                .unwrap()
        );
        assert_eq!(s.download(&a.content_id).unwrap().unwrap().pieces, [0, 0]);
        let all = s.downloads().unwrap();
        assert_eq!(
            all.iter().map(|d| d.content_id).collect::<Vec<_>>(),
            vec![a.content_id, b.content_id],
            "oldest first"
        );
        assert!(s.remove_download(&a.content_id).unwrap());
        assert!(!s.remove_download(&a.content_id).unwrap());
        assert_eq!(s.download(&a.content_id).unwrap(), None);
        assert_eq!(s.downloads().unwrap().len(), 1);
    }

    #[test]
    fn version_one_database_migrates() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("db");
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let mut s = Store::open(&db).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.save_guards(&[guard(4, 4)]).unwrap();
        assert_eq!(s.guards().unwrap(), vec![guard(4, 4)]);
    }
}
