//! The usage journal of one serving replica: an event is acknowledged (and the request it
//! meters answered) only after it is appended to a local segment file, so a crash loses no
//! acknowledged event. Appends from concurrent requests are group-committed: one write (and,
//! under `SyncPolicy::Always`, one `fdatasync`) per batch, by a dedicated thread.
//!
//! Every few seconds, at shutdown and when a replica starts again after a crash, sealed
//! segments become Parquet files under each tenant's `usage/date=YYYY-MM-DD/`, named after the
//! segment (`j-<replica>-<segment uuid>.parquet`), and only then is the segment deleted. A
//! crash between the Parquet write and the delete rewrites the same files with the same events
//! on recovery: nothing is lost and nothing doubles (readers also drop duplicate ids).
//!
//! Without a directory (`memory://` storage, tests), segments are kept in memory: the same
//! protocol, without crash safety.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::platform::{Platform, PlatformError};
use crate::storage::StorageError;
use crate::tenant::{TenantId, TenantState};
use crate::usage::{UsageEvent, files};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// After `fdatasync`: survives a machine crash (the default).
    #[default]
    Always,
    /// After the write reaches the kernel: survives a process crash, not a power cut.
    Os,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("usage journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("usage journal {0} is held by another process (one replica per directory)")]
    Locked(PathBuf),
    #[error("the usage journal has stopped")]
    Stopped,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One line of a segment: a tenant's events of one request.
#[derive(Serialize, Deserialize)]
struct Entry {
    t: String,
    e: Vec<UsageEvent>,
}

/// A segment no longer written to, waiting to become Parquet.
#[derive(Debug, Clone)]
struct Sealed {
    /// The uuid part of its name: names its Parquet files.
    name: String,
    body: SealedBody,
}

#[derive(Debug, Clone)]
enum SealedBody {
    File(PathBuf),
    Memory(Arc<Vec<u8>>),
}

enum Command {
    Append {
        line: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Seal {
        done: oneshot::Sender<Result<(), String>>,
    },
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlushReport {
    pub segments: usize,
    pub events: usize,
    /// Events of tenants that no longer exist (offboarded): nowhere to write them.
    pub dropped: usize,
    /// Unreadable lines set aside with their segment under `quarantine/`.
    pub corrupt_lines: usize,
    /// Segments that could not be written now (kept for the next flush).
    pub failed_segments: usize,
}

pub struct UsageJournal {
    platform: Platform,
    clock: SharedClock,
    policy: SyncPolicy,
    replica: String,
    dir_opt: Option<PathBuf>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    sealed: Arc<Mutex<VecDeque<Sealed>>>,
    flushing: tokio::sync::Mutex<()>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for UsageJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UsageJournal({}, {:?})", self.replica, self.dir_opt)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segment being written.
struct Open {
    name: String,
    seq: u64,
    file_opt: Option<File>,
    memory: Vec<u8>,
    /// Bytes written whole (a failed write is cut back to this).
    len: u64,
}

/// Where the writer thread puts lines.
struct Writer {
    dir_opt: Option<PathBuf>,
    policy: SyncPolicy,
    next_seq: u64,
    current: Option<Open>,
    sealed: Arc<Mutex<VecDeque<Sealed>>>,
    /// Held for the journal's life: one process per directory.
    _lock: Option<File>,
}

impl Writer {
    fn segment_path(dir: &Path, seq: u64, name: &str) -> PathBuf {
        dir.join(format!("seg-{seq:012}-{name}.log"))
    }

    fn open_segment(&mut self) -> Result<&mut Open, String> {
        if self.current.is_none() {
            let name = uuid::Uuid::now_v7().simple().to_string();
            let seq = self.next_seq;
            let file_opt = match &self.dir_opt {
                Some(dir) => {
                    let path = Self::segment_path(dir, seq, &name);
                    let file = OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    // the new name itself must survive a power cut
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                    Some(file)
                }
                None => None,
            };
            self.next_seq += 1;
            self.current = Some(Open {
                name,
                seq,
                file_opt,
                memory: Vec::new(),
                len: 0,
            });
        }
        self.current
            .as_mut()
            .ok_or_else(|| "no open segment".to_string())
    }

    /// Writes `lines` as one batch; durable per the policy when it returns `Ok`. A failed
    /// write is cut back and its segment sealed, so no later line is glued to a torn one.
    fn write(&mut self, lines: &[u8]) -> Result<(), String> {
        let policy = self.policy;
        let open = self.open_segment()?;
        let Some(file) = open.file_opt.as_mut() else {
            open.memory.extend_from_slice(lines);
            return Ok(());
        };
        let written = file.write_all(lines).and_then(|()| match policy {
            SyncPolicy::Always => file.sync_data(),
            SyncPolicy::Os => Ok(()),
        });
        match written {
            Ok(()) => {
                open.len += lines.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = file.set_len(open.len);
                self.seal();
                Err(error.to_string())
            }
        }
    }

    /// Moves the open segment to the sealed ones (even when its final sync fails: what it
    /// holds was synced per append under `Always`, and it must not stay open).
    fn seal(&mut self) {
        let Some(open) = self.current.take() else {
            return;
        };
        let body = match (open.file_opt, &self.dir_opt) {
            (Some(file), Some(dir)) => {
                if let Err(error) = file.sync_all() {
                    tracing::error!(segment = %open.name, %error, "usage journal segment not synced at seal");
                }
                SealedBody::File(Self::segment_path(dir, open.seq, &open.name))
            }
            _ => SealedBody::Memory(Arc::new(open.memory)),
        };
        self.sealed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Sealed {
                name: open.name,
                body,
            });
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        while let Ok(first) = commands.recv() {
            let mut batch = vec![first];
            batch.extend(commands.try_iter());
            let mut lines = Vec::new();
            let mut waiting = Vec::new();
            for command in batch {
                match command {
                    Command::Append { line, done } => {
                        lines.extend_from_slice(&line);
                        waiting.push(done);
                    }
                    Command::Seal { done } => {
                        let result = self.commit(&lines, &mut waiting);
                        lines.clear();
                        self.seal();
                        let _ = done.send(result);
                    }
                }
            }
            let _ = self.commit(&lines, &mut waiting);
        }
        // the journal was dropped: what was written stays in its segment for the next start
        if let Some(Open {
            file_opt: Some(file),
            ..
        }) = &self.current
        {
            let _ = file.sync_all();
        }
    }

    /// Writes the pending lines and answers their appends.
    fn commit(
        &mut self,
        lines: &[u8],
        waiting: &mut Vec<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), String> {
        if waiting.is_empty() {
            return Ok(());
        }
        let result = self.write(lines);
        for done in waiting.drain(..) {
            let _ = done.send(result.clone());
        }
        result
    }
}

impl UsageJournal {
    /// Opens the journal of `replica` in `dir_opt` (in memory without one). Segments left by
    /// an earlier run are sealed, waiting for the next `flush`.
    pub fn open(
        platform: Platform,
        clock: SharedClock,
        replica: &str,
        dir_opt: Option<PathBuf>,
        policy: SyncPolicy,
    ) -> Result<Self, JournalError> {
        let sealed = Arc::new(Mutex::new(VecDeque::new()));
        let mut next_seq = 0;
        let mut lock = None;
        if let Some(dir) = &dir_opt {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            let lock_path = dir.join("LOCK");
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(io_error(&lock_path))?;
            if file.try_lock().is_err() {
                return Err(JournalError::Locked(dir.clone()));
            }
            lock = Some(file);
            let mut left = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
                let path = entry.map_err(io_error(dir))?.path();
                let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(rest) = file_name
                    .strip_prefix("seg-")
                    .and_then(|r| r.strip_suffix(".log"))
                else {
                    continue;
                };
                let Some((seq, name)) = rest.split_once('-') else {
                    continue;
                };
                let Ok(seq) = seq.parse::<u64>() else {
                    continue;
                };
                left.push((seq, name.to_string(), path.clone()));
            }
            left.sort();
            if let Some((seq, _, _)) = left.last() {
                next_seq = seq + 1;
                tracing::info!(
                    replica,
                    segments = left.len(),
                    "usage journal: recovering segments of an earlier run"
                );
            }
            let mut queue = sealed.lock().unwrap_or_else(|p| p.into_inner());
            for (_, name, path) in left {
                queue.push_back(Sealed {
                    name,
                    body: SealedBody::File(path),
                });
            }
        }
        let writer = Writer {
            dir_opt: dir_opt.clone(),
            policy,
            next_seq,
            current: None,
            sealed: sealed.clone(),
            _lock: lock,
        };
        let (commands, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("usage-journal-{replica}"))
            .spawn(move || writer.run(receiver))
            .map_err(io_error(dir_opt.as_deref().unwrap_or(Path::new("."))))?;
        Ok(Self {
            platform,
            clock,
            policy,
            replica: replica.to_string(),
            dir_opt,
            commands: Mutex::new(Some(commands)),
            sealed,
            flushing: tokio::sync::Mutex::new(()),
            writer: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, command: Command) -> Result<(), JournalError> {
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        commands
            .as_ref()
            .ok_or(JournalError::Stopped)?
            .send(command)
            .map_err(|_| JournalError::Stopped)
    }

    fn failed(&self, message: String) -> JournalError {
        JournalError::Io {
            path: self.dir_opt.clone().unwrap_or_default(),
            source: std::io::Error::other(message),
        }
    }

    /// Appends one tenant's events; returns once they are durable (per the sync policy).
    pub async fn append(
        &self,
        tenant: &TenantId,
        events: Vec<UsageEvent>,
    ) -> Result<(), JournalError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut line = serde_json::to_vec(&Entry {
            t: tenant.to_string(),
            e: events,
        })
        .map_err(|e| self.failed(e.to_string()))?;
        line.push(b'\n');
        let (done, answer) = oneshot::channel();
        self.send(Command::Append { line, done })?;
        answer
            .await
            .map_err(|_| JournalError::Stopped)?
            .map_err(|message| self.failed(message))
    }

    /// Closes the open segment so the next `write_sealed` takes it (the first half of a flush).
    pub async fn seal(&self) -> Result<(), JournalError> {
        let (done, answer) = oneshot::channel();
        self.send(Command::Seal { done })?;
        answer
            .await
            .map_err(|_| JournalError::Stopped)?
            .map_err(|message| self.failed(message))
    }

    /// Segments sealed and not yet acknowledged.
    pub fn sealed_segments(&self) -> usize {
        self.sealed.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The sealed segments, oldest first.
    fn sealed_now(&self) -> Vec<Sealed> {
        let sealed = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        sealed.iter().cloned().collect()
    }

    /// Seals the open segment, writes every sealed segment as Parquet and deletes it. A
    /// segment whose write fails stays for the next flush; the others go on.
    pub async fn flush(&self) -> Result<FlushReport, JournalError> {
        let _one_at_a_time = self.flushing.lock().await;
        self.seal().await?;
        let segments = self.sealed_now();
        let mut report = FlushReport::default();
        for segment in segments {
            let written = match self.write_segment(&segment).await {
                Ok(written) => written,
                Err(error) => {
                    tracing::warn!(replica = %self.replica, segment = %segment.name, %error, "usage journal segment not written yet: kept for the next flush");
                    report.failed_segments += 1;
                    continue;
                }
            };
            self.acknowledge(&segment, written.corrupt_lines > 0)?;
            report.segments += 1;
            report.events += written.events;
            report.dropped += written.dropped;
            report.corrupt_lines += written.corrupt_lines;
        }
        Ok(report)
    }

    /// Writes every sealed segment as Parquet without acknowledging any (the second half of a
    /// flush; what a crash before the acknowledgement leaves behind).
    pub async fn write_sealed(&self) -> Result<usize, JournalError> {
        let segments = self.sealed_now();
        let mut events = 0;
        for segment in &segments {
            events += self.write_segment(segment).await?.events;
        }
        Ok(events)
    }

    /// The events of a tenant group that may be written: none for a tenant that is gone or
    /// leaving, and none dated before the tenant's creation (an id offboarded and onboarded
    /// again does not inherit its previous owner's usage). `None` when the tenant is gone.
    async fn admissible(
        &self,
        tenant: &str,
        events: Vec<UsageEvent>,
    ) -> Result<(Option<TenantId>, Vec<UsageEvent>, usize), JournalError> {
        let Ok(id) = TenantId::parse(tenant) else {
            tracing::warn!(
                tenant,
                events = events.len(),
                "usage of an invalid tenant id: dropped"
            );
            return Ok((None, Vec::new(), events.len()));
        };
        let record = match self.platform.tenant(&id).await {
            Ok(record) => record,
            Err(PlatformError::TenantNotFound(_)) => {
                tracing::warn!(%tenant, events = events.len(), "usage of a tenant that no longer exists: dropped");
                return Ok((None, Vec::new(), events.len()));
            }
            Err(error) => return Err(self.failed(format!("tenant {tenant}: {error}"))),
        };
        if !matches!(record.state, TenantState::Active) {
            tracing::warn!(%tenant, state = ?record.state, events = events.len(), "usage of a tenant being offboarded: dropped");
            return Ok((None, Vec::new(), events.len()));
        }
        let total = events.len();
        let kept: Vec<UsageEvent> = events
            .into_iter()
            .filter(|event| event.at >= record.created_at)
            .collect();
        if kept.len() < total {
            tracing::warn!(%tenant, events = total - kept.len(), "usage dated before the tenant was created: dropped");
        }
        let dropped = total - kept.len();
        Ok((Some(id), kept, dropped))
    }

    async fn write_segment(&self, segment: &Sealed) -> Result<FlushReport, JournalError> {
        let bytes: Arc<Vec<u8>> = match &segment.body {
            SealedBody::File(path) => Arc::new(std::fs::read(path).map_err(io_error(path))?),
            SealedBody::Memory(bytes) => bytes.clone(),
        };
        let mut report = FlushReport::default();
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<String, Vec<UsageEvent>> = BTreeMap::new();
        let lines: Vec<&[u8]> = bytes.split(|byte| *byte == b'\n').collect();
        let last = lines.len().saturating_sub(1);
        for (index, line) in lines.into_iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => {
                    let group = groups.entry(entry.t).or_default();
                    group.extend(entry.e.into_iter().filter(|e| seen.insert(e.id.clone())));
                }
                // a torn last line was never acknowledged: its append did not return
                Err(_) if index == last => {}
                Err(error) => {
                    tracing::error!(replica = %self.replica, segment = %segment.name, line = index + 1, %error, "unreadable usage journal line: segment kept in quarantine");
                    report.corrupt_lines += 1;
                }
            }
        }
        // events count as recorded when they reach the tenant's usage (a segment recovered
        // long after a crash is late, and reported as such)
        let now = self.clock.now();
        let file = format!("j-{}-{}.parquet", self.replica, segment.name);
        for (tenant, events) in groups {
            let (id_opt, events, dropped) = self.admissible(&tenant, events).await?;
            report.dropped += dropped;
            let Some(id) = id_opt else {
                continue;
            };
            let store = self
                .platform
                .tenant_store(&id)
                .await
                .map_err(|error| self.failed(format!("tenant {tenant}: {error}")))?;
            let mut by_day: BTreeMap<chrono::NaiveDate, Vec<UsageEvent>> = BTreeMap::new();
            for mut event in events {
                event.recorded_at = now;
                by_day.entry(event.at.date_naive()).or_default().push(event);
            }
            let mut paths = Vec::new();
            for events in by_day.values() {
                report.events += files::write_events(&store, &file, events).await?;
                if let Some(first) = events.first() {
                    paths.push(
                        crate::storage::RelativePath::parse(&format!(
                            "{}/{file}",
                            files::day_dir(first.at.date_naive())
                        ))
                        .map_err(StorageError::from)?,
                    );
                }
            }
            // the segment is deleted next: its events must be durable first
            if self.policy == SyncPolicy::Always {
                self.platform
                    .sync_objects(&id, paths)
                    .await
                    .map_err(|error| self.failed(format!("tenant {tenant}: {error}")))?;
            }
        }
        report.segments = 1;
        Ok(report)
    }

    /// Forgets a segment whose events are in Parquet (a segment with unreadable lines is kept
    /// under `quarantine/` for an operator).
    fn acknowledge(&self, segment: &Sealed, quarantine: bool) -> Result<(), JournalError> {
        if let SealedBody::File(path) = &segment.body {
            match (quarantine, &self.dir_opt) {
                (true, Some(dir)) => {
                    let kept = dir.join("quarantine");
                    std::fs::create_dir_all(&kept).map_err(io_error(&kept))?;
                    let target = kept.join(path.file_name().unwrap_or_default());
                    std::fs::rename(path, &target).map_err(io_error(path))?;
                }
                _ => match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error(path)(error)),
                },
            }
        }
        self.sealed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|kept| kept.name != segment.name);
        Ok(())
    }
}

impl Drop for UsageJournal {
    fn drop(&mut self) {
        // closing the channel stops the writer once it has written what it was given
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}
