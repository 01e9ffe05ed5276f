//! Blobs on disk under `<data_dir>/media/`, content-addressed by SHA-256 so identical uploads
//! share one file:
//!
//! ```text
//! media/content/ab/cd/abcd…ef             the bytes of every upload with that hash
//! media/thumbnails/ab/cd/abcd…ef/96x96-crop.png   thumbnails made from it (a cache)
//! media/tmp/                               uploads in progress
//! ```
//!
//! An upload is streamed into `tmp/`, fsynced, renamed into place and the directory fsynced:
//! a file under `content/` is always complete, and it is durable before any row names it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// A stored blob: its hash (hex) and size.
#[derive(Debug, Clone)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

/// The media directory.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("media")
}

fn fanout(base: &Path, sha256: &str) -> Result<PathBuf> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::internal(format!("bad content hash {sha256:?}")));
    }
    Ok(base.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256))
}

/// Where the bytes with this hash live.
pub fn content_path(root: &Path, sha256: &str) -> Result<PathBuf> {
    fanout(&root.join("content"), sha256)
}

/// The thumbnail cache directory for the content with this hash.
pub fn thumbnail_dir(root: &Path, sha256: &str) -> Result<PathBuf> {
    fanout(&root.join("thumbnails"), sha256)
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let msg = format!("{what} {}", path.display());
    move |e| Error::internal(format!("{msg}: {e}"))
}

/// A temporary file removed on drop unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn temp_path(root: &Path) -> PathBuf {
    root.join("tmp")
        .join(format!("{}.part", crate::users::random_token(24)))
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir)
        .await
        .map_err(io("cannot open", dir))?;
    d.sync_all().await.map_err(io("cannot fsync", dir))
}

/// Streams `body` into the store, refusing more than `limit` bytes with 413 M_TOO_LARGE.
/// Returns once the file is durable (fsynced, renamed, directory fsynced).
pub async fn write_stream<S, E>(root: &Path, mut body: S, limit: u64) -> Result<Blob>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let tmp_dir = root.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(io("cannot create", &tmp_dir))?;
    let tmp = TempFile(Some(temp_path(root)));
    let tmp_path = tmp.0.clone().unwrap_or_default();
    let mut file = tokio::fs::File::create(&tmp_path)
        .await
        .map_err(io("cannot create", &tmp_path))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::unknown(format!("Upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(upload_too_large(limit));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(io("cannot write", &tmp_path))?;
    }
    file.flush().await.map_err(io("cannot write", &tmp_path))?;
    file.sync_all()
        .await
        .map_err(io("cannot fsync", &tmp_path))?;
    drop(file);

    let sha256 = hex::encode(hasher.finalize());
    let dest = content_path(root, &sha256)?;
    let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("cannot create", &dir))?;
    if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
        // The same bytes are already stored (and durable); the temporary file goes on drop.
        return Ok(Blob { sha256, size });
    }
    tokio::fs::rename(&tmp_path, &dest)
        .await
        .map_err(io("cannot rename into", &dest))?;
    let mut tmp = tmp;
    tmp.0 = None;
    sync_dir(&dir).await?;
    Ok(Blob { sha256, size })
}

pub fn upload_too_large(limit: u64) -> Error {
    Error::too_large(format!("Upload is larger than the limit of {limit} bytes"))
}

/// Writes a cache file (thumbnails) atomically: readers see the whole file or none.
pub async fn write_cache_file(root: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let tmp_dir = root.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir)
        .await
        .map_err(io("cannot create", &tmp_dir))?;
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io("cannot create", dir))?;
    }
    let mut tmp = TempFile(Some(temp_path(root)));
    let tmp_path = tmp.0.clone().unwrap_or_default();
    tokio::fs::write(&tmp_path, data)
        .await
        .map_err(io("cannot write", &tmp_path))?;
    tokio::fs::rename(&tmp_path, dest)
        .await
        .map_err(io("cannot rename into", dest))?;
    tmp.0 = None;
    Ok(())
}

/// A file's bytes as a stream of chunks (for response bodies), without reading it whole.
pub fn read_stream(
    file: tokio::fs::File,
) -> impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    })
}
