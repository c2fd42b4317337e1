//! Data files are private: events carry what cameras saw (and snapshots are pictures), so the
//! files and directories the relay creates under `data_dir` are readable by its own user only.
//!
//! Files (outbox segments, ack files, dead letters, `corrupt/`, `rules-state.json`, their temp
//! files, the lock file) are created mode [`FILE_MODE`], directories (`data_dir` itself when the
//! relay creates it, `outbox/`, `outbox/NAME/`, `dead-letter/`, `corrupt/`) [`DIR_MODE`]. The
//! umask can only take bits away. Existing files and directories keep their mode: an operator
//! who chose one keeps it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Mode of every data file the relay creates: owner read and write.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the relay creates under (and including) `data_dir`.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` whose `create` makes the file [`FILE_MODE`].
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// `File::create` (write, create, truncate) with [`FILE_MODE`].
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// `fs::create_dir_all` where every directory it creates is [`DIR_MODE`].
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_directories_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_dir_all(&deep).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        create(&deep.join("f")).unwrap();
        assert_eq!(mode(&deep.join("f")), 0o600);
        options()
            .append(true)
            .create(true)
            .open(deep.join("g"))
            .unwrap();
        assert_eq!(mode(&deep.join("g")), 0o600);
    }
}
