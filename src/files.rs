//! Reading files that come from outside runwarden (policy files, world files, saved plans)
//! with a size limit, so that a huge or endless file is refused before it is in memory.

use std::io::{self, Read};
use std::path::Path;

/// Reads at most `limit` bytes of the file at `path`. A longer file is an error of kind
/// [`io::ErrorKind::FileTooLarge`] whose message names the limit; it is found by reading one
/// byte past the limit, not from the metadata (which a FIFO or `/dev/zero` does not state).
pub fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    // A regular file states its size: refuse a big one without reading it (or allocating).
    if file.metadata()?.len() > limit {
        return Err(too_large(limit));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("the file is larger than {}, the limit for this kind of file", size(limit)),
    )
}

/// Like [`read_capped`], for a UTF-8 text file.
pub fn read_to_string_capped(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, limit)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("the file is not valid UTF-8: {e}")))
}

/// `16 MiB`, `512 KiB`, `100 bytes`.
pub fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_at_the_limit_is_read_and_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"12345");
        let err = read_capped(&path, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(err.to_string(), "the file is larger than 4 bytes, the limit for this kind of file");
    }

    #[cfg(unix)]
    #[test]
    fn an_endless_file_is_refused_after_the_limit() {
        let err = read_capped(Path::new("/dev/zero"), 1024 * 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("1 MiB"), "{err}");
    }
}
