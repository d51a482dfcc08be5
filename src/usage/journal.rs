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

use crate::platform::{Platform, PlatformError};
use crate::storage::StorageError;
use crate::tenant::TenantId;
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
}

pub struct UsageJournal {
    platform: Platform,
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

/// Where the writer thread puts lines.
struct Writer {
    dir_opt: Option<PathBuf>,
    policy: SyncPolicy,
    next_seq: u64,
    /// The open segment: its name, and its file or in-memory bytes.
    current: Option<(String, Option<File>, Vec<u8>)>,
    sealed: Arc<Mutex<VecDeque<Sealed>>>,
    /// Held for the journal's life: one process per directory.
    _lock: Option<File>,
}

impl Writer {
    fn segment_path(dir: &Path, seq: u64, name: &str) -> PathBuf {
        dir.join(format!("seg-{seq:012}-{name}.log"))
    }

    fn open_segment(&mut self) -> Result<(), String> {
        if self.current.is_some() {
            return Ok(());
        }
        let name = uuid::Uuid::now_v7().simple().to_string();
        let file = match &self.dir_opt {
            Some(dir) => {
                let path = Self::segment_path(dir, self.next_seq, &name);
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Some(file)
            }
            None => None,
        };
        self.next_seq += 1;
        self.current = Some((name, file, Vec::new()));
        Ok(())
    }

    /// Writes `lines` as one batch; durable per the policy when it returns `Ok`.
    fn write(&mut self, lines: &[u8]) -> Result<(), String> {
        self.open_segment()?;
        let policy = self.policy;
        let Some((_, file_opt, memory)) = self.current.as_mut() else {
            return Err("no open segment".into());
        };
        match file_opt {
            Some(file) => {
                file.write_all(lines).map_err(|e| e.to_string())?;
                if policy == SyncPolicy::Always {
                    file.sync_data().map_err(|e| e.to_string())?;
                }
            }
            None => memory.extend_from_slice(lines),
        }
        Ok(())
    }

    fn seal(&mut self) -> Result<(), String> {
        let Some((name, file_opt, memory)) = self.current.take() else {
            return Ok(());
        };
        let body = match (file_opt, &self.dir_opt) {
            (Some(file), Some(dir)) => {
                file.sync_all().map_err(|e| e.to_string())?;
                SealedBody::File(Self::segment_path(dir, self.next_seq - 1, &name))
            }
            _ => SealedBody::Memory(Arc::new(memory)),
        };
        self.sealed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Sealed { name, body });
        Ok(())
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
                        let result = self.commit(&lines, &mut waiting).and_then(|()| self.seal());
                        lines.clear();
                        let _ = done.send(result);
                    }
                }
            }
            let _ = self.commit(&lines, &mut waiting);
        }
        // the journal was dropped: what was written stays in its segment for the next start
        if let Some((_, Some(file), _)) = &self.current {
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

    /// Seals the open segment, writes every sealed segment as Parquet and deletes it. A
    /// segment whose write fails stays for the next flush.
    pub async fn flush(&self) -> Result<FlushReport, JournalError> {
        let _one_at_a_time = self.flushing.lock().await;
        self.seal().await?;
        let mut report = FlushReport::default();
        loop {
            let next = self
                .sealed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .front()
                .cloned();
            let Some(segment) = next else {
                return Ok(report);
            };
            let written = self.write_segment(&segment).await?;
            self.acknowledge(&segment, written.corrupt_lines > 0)?;
            report.segments += 1;
            report.events += written.events;
            report.dropped += written.dropped;
            report.corrupt_lines += written.corrupt_lines;
        }
    }

    /// Writes every sealed segment as Parquet without acknowledging any (the second half of a
    /// flush; what a crash before the acknowledgement leaves behind).
    pub async fn write_sealed(&self) -> Result<usize, JournalError> {
        let segments: Vec<Sealed> = self
            .sealed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut events = 0;
        for segment in &segments {
            events += self.write_segment(segment).await?.events;
        }
        Ok(events)
    }

    async fn write_segment(&self, segment: &Sealed) -> Result<FlushReport, JournalError> {
        let bytes: Arc<Vec<u8>> = match &segment.body {
            SealedBody::File(path) => Arc::new(std::fs::read(path).map_err(io_error(path))?),
            SealedBody::Memory(bytes) => bytes.clone(),
        };
        let mut report = FlushReport::default();
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<(String, chrono::NaiveDate), Vec<UsageEvent>> = BTreeMap::new();
        let lines: Vec<&[u8]> = bytes.split(|byte| *byte == b'\n').collect();
        let last = lines.len().saturating_sub(1);
        for (index, line) in lines.into_iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(entry) => {
                    for event in entry.e {
                        if seen.insert(event.id.clone()) {
                            groups
                                .entry((entry.t.clone(), event.at.date_naive()))
                                .or_default()
                                .push(event);
                        }
                    }
                }
                // a torn last line was never acknowledged: its append did not return
                Err(_) if index == last => {}
                Err(error) => {
                    tracing::error!(replica = %self.replica, segment = %segment.name, line = index + 1, %error, "unreadable usage journal line: segment kept in quarantine");
                    report.corrupt_lines += 1;
                }
            }
        }
        let file = format!("j-{}-{}.parquet", self.replica, segment.name);
        for ((tenant, _), events) in groups {
            let store = match TenantId::parse(&tenant) {
                Ok(id) => match self.platform.tenant_store(&id).await {
                    Ok(store) => store,
                    Err(PlatformError::TenantNotFound(_)) => {
                        tracing::warn!(%tenant, events = events.len(), "usage of a tenant that no longer exists: dropped");
                        report.dropped += events.len();
                        continue;
                    }
                    Err(error) => {
                        return Err(self.failed(format!("tenant {tenant}: {error}")));
                    }
                },
                Err(_) => {
                    report.dropped += events.len();
                    continue;
                }
            };
            report.events += files::write_events(&store, &file, &events).await?;
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
        let mut sealed = self.sealed.lock().unwrap_or_else(|p| p.into_inner());
        if sealed
            .front()
            .is_some_and(|front| front.name == segment.name)
        {
            sealed.pop_front();
        }
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
