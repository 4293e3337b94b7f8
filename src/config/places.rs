//! The directories a config names must be apart: `state_dir`, the root of a
//! `file://` target and every stream's `dir` — no two the same directory,
//! none inside another. Otherwise walship reads its own output as input
//! (archives or state files taken for segments), two streams fight over the
//! same files, or a prune deletes what a stream still needs.
//!
//! Checked in three steps, each catching what the one before cannot see:
//! - [`check_written`] (at parse, pure): the paths as written, with `.`,
//!   `..` and repeated slashes taken out lexically;
//! - [`check_resolved`] (at load): through the filesystem, each path's
//!   deepest existing ancestor resolved with its symlinks;
//! - [`check_identities`] (by `walship check`, after it created
//!   `state_dir`): directory identity (device and inode) of every existing
//!   place and its ancestors, which also sees bind mounts and the same
//!   filesystem mounted twice.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::ini::{Section, SectionKind};
use super::{Config, ConfigError, TargetUrl, invalid};

/// One directory the config names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The key naming it, qualified: `[global] state_dir`, `[stream a] dir`.
    pub key: String,
    pub path: PathBuf,
}

/// How two places collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Same,
    /// The first is inside the second.
    Inside,
}

/// The line of each place-naming key, for messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLines(HashMap<String, usize>);

impl KeyLines {
    /// The lines of `state_dir`, `target` and each stream's `dir`.
    pub fn of(sections: &[Section]) -> KeyLines {
        let mut lines = HashMap::new();
        for section in sections {
            let label = section.kind.label();
            let wanted: &[&str] = match section.kind {
                SectionKind::Global => &["state_dir", "target"],
                SectionKind::Stream(_) => &["dir"],
            };
            for entry in section.entries.iter().filter(|e| wanted.contains(&e.key.as_str())) {
                lines.insert(format!("{label} {}", entry.key), entry.line);
            }
        }
        KeyLines(lines)
    }

    fn line(&self, key: &str) -> Option<usize> {
        self.0.get(key).copied()
    }
}

/// The places of `config`, in file order: state_dir, a file target, the
/// stream directories.
pub fn places(config: &Config) -> Vec<Place> {
    let mut places = vec![Place { key: "[global] state_dir".into(), path: config.global.state_dir.clone() }];
    if let TargetUrl::File(root) = &config.global.target {
        places.push(Place { key: "[global] target".into(), path: root.clone() });
    }
    for stream in &config.streams {
        places.push(Place { key: format!("[stream {}] dir", stream.name), path: stream.dir.clone() });
    }
    places
}

/// `path` with `.` components and repeated slashes removed and each `..`
/// taking away the component before it (never above the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// How `a` relates to `b`, if they collide.
pub fn relation(a: &Path, b: &Path) -> Option<Relation> {
    if a == b {
        Some(Relation::Same)
    } else if a.starts_with(b) {
        Some(Relation::Inside)
    } else {
        None
    }
}

/// The first colliding pair `(later, earlier, relation of later to earlier
/// or, with `swapped`, of earlier to later)` among `paths`.
fn first_collision(paths: &[PathBuf]) -> Option<(usize, usize, Relation, bool)> {
    for later in 0..paths.len() {
        for earlier in 0..later {
            if let Some(relation) = relation(&paths[later], &paths[earlier]) {
                return Some((later, earlier, relation, false));
            }
            if let Some(relation) = relation(&paths[earlier], &paths[later]) {
                return Some((later, earlier, relation, true));
            }
        }
    }
    None
}

/// The reason a pair of places may not collide, and the fix.
fn why(a: &Place, b: &Place) -> &'static str {
    let is = |place: &Place, key: &str| place.key.ends_with(key);
    let pair = |x: &str, y: &str| (is(a, x) && is(b, y)) || (is(a, y) && is(b, x));
    if pair("] dir", "] dir") {
        "two streams would archive the same files (or one another's) under different names; \
         give each stream a directory of its own"
    } else if pair("state_dir", "target") {
        "the state directory and the archive must be apart, so that losing one never loses \
         the other and neither reads the other's files; put them in separate directories"
    } else if pair("state_dir", "] dir") {
        "walship would find its own state files among the segments (or write into the \
         stream's directory); put state_dir outside every stream directory"
    } else {
        "walship would archive its own archive (or write archives among the segments); \
         put the target outside every stream directory"
    }
}

/// The message for `later` colliding with `earlier` (named `earlier_key`,
/// with its line when known).
fn collision_message(
    later: &Place,
    earlier: &Place,
    earlier_key: &str,
    relation: Relation,
    swapped: bool,
    how: &str,
) -> String {
    let relation_text = match (relation, swapped) {
        (Relation::Same, _) => "is the same directory as",
        (Relation::Inside, false) => "is inside",
        (Relation::Inside, true) => "contains",
    };
    format!(
        "{} {relation_text} {earlier_key} ({}){how}; {}",
        later.path.display(),
        earlier.path.display(),
        why(later, earlier)
    )
}

/// The first collision among `places` judged by `paths` (their written or
/// resolved forms), as an error on the later key's line.
fn collision_error(
    config_path: &Path,
    lines: &KeyLines,
    places: &[Place],
    paths: &[PathBuf],
    how: impl Fn(&Path, &Path) -> String,
) -> Result<(), ConfigError> {
    let Some((later, earlier, relation, swapped)) = first_collision(paths) else {
        return Ok(());
    };
    let (later_place, earlier_place) = (&places[later], &places[earlier]);
    let earlier_key = match lines.line(&earlier_place.key) {
        Some(line) => format!("{} (line {line})", earlier_place.key),
        None => earlier_place.key.clone(),
    };
    let how = how(&paths[later], &paths[earlier]);
    let message = collision_message(later_place, earlier_place, &earlier_key, relation, swapped, &how);
    Err(invalid(config_path, lines.line(&later_place.key), Some(later_place.key.clone()), message))
}

/// The places as written (lexically normalized) must be apart.
pub fn check_written(config: &Config, lines: &KeyLines) -> Result<(), ConfigError> {
    let places = places(config);
    let paths: Vec<PathBuf> = places.iter().map(|p| normalize(&p.path)).collect();
    collision_error(&config.path, lines, &places, &paths, |_, _| String::new())
}

/// `path` with the symlinks of its deepest existing ancestor resolved and
/// the rest appended (what the path will mean once the rest is created).
pub fn resolve(path: &Path) -> PathBuf {
    let path = normalize(path);
    for ancestor in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(ancestor) {
            let rest = path.strip_prefix(ancestor).unwrap_or(Path::new(""));
            return normalize(&real.join(rest));
        }
    }
    path
}

/// The places, resolved through the filesystem, must be apart.
pub fn check_resolved(config: &Config, lines: &KeyLines) -> Result<(), ConfigError> {
    let places = places(config);
    let paths: Vec<PathBuf> = places.iter().map(|p| resolve(&p.path)).collect();
    collision_error(&config.path, lines, &places, &paths, |later, earlier| {
        format!(" once symlinks are resolved ({} and {})", later.display(), earlier.display())
    })
}

/// Device and inode of a directory.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

/// For `walship check`: no existing place is the same directory as, or
/// inside, another, judged by device and inode (bind mounts included).
/// The message names both keys.
pub fn check_identities(config: &Config) -> Result<(), String> {
    let places = places(config);
    let identities: Vec<Option<(u64, u64)>> = places.iter().map(|p| identity(&p.path)).collect();
    for (a, place) in places.iter().enumerate() {
        let resolved = resolve(&place.path);
        for ancestor in resolved.ancestors() {
            let Some(id) = identity(ancestor) else { continue };
            for (b, other) in places.iter().enumerate() {
                if a == b || identities[b] != Some(id) {
                    continue;
                }
                let relation = if ancestor == resolved { Relation::Same } else { Relation::Inside };
                let how = " (the same directory on disk)";
                return Err(collision_message(place, other, &other.key, relation, false, how));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    /// A config with state_dir, a file target and two streams at the paths given.
    fn with_places(state: &str, target: &str, a: &str, b: &str) -> String {
        format!(
            "[global]\nstate_dir = {state}\ntarget = file://{target}\n\
             [stream a]\ndir = {a}\npattern = {{seq}}\nbatch_size = 1\n\
             [stream b]\ndir = {b}\npattern = {{seq}}\nbatch_size = 1\n"
        )
    }

    #[test]
    fn normalize_removes_dots_and_parents() {
        assert_eq!(normalize(Path::new("/a/./b//c/../d")), PathBuf::from("/a/b/d"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn separate_places_parse() {
        assert!(parse_text(&with_places("/s", "/t", "/a", "/b")).is_ok());
        assert!(parse_text(&with_places("/srv/s", "/srv/t", "/srv/a", "/srv/ab")).is_ok());
    }

    #[test]
    fn overlapping_places_are_refused_where_written() {
        #[rustfmt::skip]
        let cases = [
            (with_places("/s", "/t", "/a", "/a"), 9, "[stream b] dir", "is the same directory as [stream a] dir (line 5)"),
            (with_places("/s", "/t", "/a", "/x/../a/"), 9, "[stream b] dir", "same directory"),
            (with_places("/s", "/t", "/a", "/a/b"), 9, "[stream b] dir", "is inside [stream a] dir"),
            (with_places("/s", "/t", "/a/b", "/a"), 9, "[stream b] dir", "contains [stream a] dir"),
            (with_places("/t/state", "/t", "/a", "/b"), 3, "[global] target", "contains [global] state_dir"),
            (with_places("/t", "/t", "/a", "/b"), 3, "[global] target", "same directory"),
            (with_places("/a/.state", "/t", "/a", "/b"), 5, "[stream a] dir", "contains [global] state_dir"),
            (with_places("/s", "/a/archive", "/a", "/b"), 5, "[stream a] dir", "contains [global] target"),
            (with_places("/s", "/s/archive", "/a", "/b"), 3, "[global] target", "is inside [global] state_dir"),
        ];
        for (text, line, key, part) in &cases {
            assert_error(text, Some(*line), Some(key), part);
        }
    }
}
