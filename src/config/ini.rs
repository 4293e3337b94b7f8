//! INI reading: lines into sections of `key = value` entries, and located
//! access to one section's values.
//!
//! The syntax is deliberately small: `[global]` and `[stream NAME]` headers,
//! `key = value` lines, whole-line comments starting with `#` or `;`, and
//! trailing comments that start with whitespace then `#` or `;`. There is no
//! quoting, escaping, line continuation or variable expansion, so a value is
//! exactly what is written between `=` and the comment. Unknown sections and
//! keys (from the table in [`super::keys`]), duplicates and empty values are
//! refused here; what a value means is the validators' business.

use std::collections::HashMap;
use std::path::Path;

use super::keys::{self, Unset};
use super::{ConfigError, invalid};

/// A section header, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionKind {
    Global,
    Stream(String),
}

impl SectionKind {
    /// `[global]` or `[stream NAME]`, for messages.
    pub fn label(&self) -> String {
        match self {
            SectionKind::Global => "[global]".to_string(),
            SectionKind::Stream(name) => format!("[stream {name}]"),
        }
    }

    fn section(&self) -> keys::Section {
        match self {
            SectionKind::Global => keys::Section::Global,
            SectionKind::Stream(_) => keys::Section::Stream,
        }
    }
}

/// One `key = value` line.
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A section header and the entries under it.
#[derive(Debug)]
pub struct Section {
    pub kind: SectionKind,
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// Split the text into sections, rejecting bad syntax, unknown sections and
/// keys, duplicates and empty values. Types are checked later.
pub fn read_sections(path: &Path, text: &str) -> Result<Vec<Section>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<Section> = Vec::new();
    // Header line of each section seen so far, to report duplicates.
    let mut headers: HashMap<SectionKind, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        let located = |(key, message)| invalid(path, Some(line), key, message);
        if content.starts_with('[') {
            let section =
                start_section(content, line, &mut headers).map_err(|message| located((None, message)))?;
            sections.push(section);
        } else {
            add_entry(sections.last_mut(), content, line).map_err(located)?;
        }
    }
    Ok(sections)
}

/// A new section from its header line, unless it repeats an earlier one.
fn start_section(
    content: &str,
    line: usize,
    headers: &mut HashMap<SectionKind, usize>,
) -> Result<Section, String> {
    let kind = parse_header(content)?;
    if let Some(first) = headers.get(&kind) {
        let fix = match kind {
            SectionKind::Global => "merge the two",
            SectionKind::Stream(_) => "give each stream its own name",
        };
        return Err(format!("{} appears twice (first at line {first}); {fix}", kind.label()));
    }
    headers.insert(kind.clone(), line);
    Ok(Section { kind, line, entries: Vec::new() })
}

/// Add a `key = value` line to the current section; the error carries the
/// key (qualified by its section) when there is one.
fn add_entry(
    section: Option<&mut Section>,
    content: &str,
    line: usize,
) -> Result<(), (Option<String>, String)> {
    let Some((key, value)) = content.split_once('=') else {
        return Err((
            None,
            format!("expected `key = value`, a [section] header or a comment, got {}", quote(content)),
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err((None, "a line starts with '=': the key is missing".into()));
    }
    let Some(section) = section else {
        return Err((
            Some(shorten(key)),
            "outside any section; put it under [global] or a [stream NAME] header".into(),
        ));
    };
    let qualified = Some(format!("{} {}", section.kind.label(), shorten(key)));
    if keys::find(section.kind.section(), key).is_none() {
        return Err((qualified, unknown_key_message(&section.kind, key)));
    }
    if let Some(first) = section.entries.iter().find(|e| e.key == key) {
        let message = format!("set twice (first at line {}); keep one", first.line);
        return Err((qualified, message));
    }
    if value.is_empty() {
        let message = "no value after '='; give one, or remove the line to use the default";
        return Err((qualified, message.into()));
    }
    section.entries.push(Entry { key: key.to_string(), value: value.to_string(), line });
    Ok(())
}

/// The line without a trailing comment: one that starts the line (after
/// blanks), or a `#` or `;` that follows whitespace.
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return "";
    }
    let start =
        line.as_bytes().windows(2).position(|w| w[0].is_ascii_whitespace() && (w[1] == b'#' || w[1] == b';'));
    match start {
        // `i` is an ASCII byte, so `..=i` ends on a character boundary.
        Some(i) => line.get(..=i).unwrap_or(line),
        None => line,
    }
}

/// `[global]` or `[stream NAME]`.
fn parse_header(content: &str) -> Result<SectionKind, String> {
    let Some(inner) = content.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) else {
        return Err(format!("a section header must end with ']', got {}", quote(content)));
    };
    let words: Vec<&str> = inner.split_whitespace().take(3).collect();
    match words.as_slice() {
        ["global"] => Ok(SectionKind::Global),
        ["stream", name] => {
            super::stream::check_stream_name(name)?;
            Ok(SectionKind::Stream((*name).to_string()))
        }
        ["stream"] => Err("a stream section needs a name: [stream NAME]".into()),
        ["stream", ..] => Err("a stream name cannot contain spaces: [stream NAME]".into()),
        ["global", ..] => Err("[global] takes no name".into()),
        _ => Err(format!("unknown section {}; expected [global] or [stream NAME]", quote(content))),
    }
}

/// "unknown key", with the likely intended key or where it belongs.
fn unknown_key_message(kind: &SectionKind, key: &str) -> String {
    let (other_label, other_section) = match kind {
        SectionKind::Global => ("a [stream NAME] section", keys::Section::Stream),
        SectionKind::Stream(_) => ("[global]", keys::Section::Global),
    };
    if keys::find(other_section, key).is_some() {
        return format!("unknown key here; `{key}` belongs in {other_label}");
    }
    let known: Vec<&str> = keys::names(kind.section()).collect();
    match closest_key(key, &known) {
        Some(guess) => format!("unknown key; did you mean `{guess}`?"),
        None => format!("unknown key; {} takes: {}", kind.label(), known.join(", ")),
    }
}

/// The known key within two edits of `key`, if any.
fn closest_key<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    if key.chars().count() > 64 {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters (both strings are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// `text` in double quotes with escapes, cut to a readable length.
pub fn quote(text: &str) -> String {
    format!("{:?}", shorten(text))
}

/// At most 64 characters of `text`, with "…" when cut.
pub fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_string(),
    }
}

/// Read access to one section's values, with errors located in the file
/// and unset keys answered from the key table.
pub struct Fields<'a> {
    pub path: &'a Path,
    section: &'a Section,
    pub label: String,
}

impl<'a> Fields<'a> {
    pub fn new(path: &'a Path, section: &'a Section) -> Fields<'a> {
        Fields { path, section, label: section.kind.label() }
    }

    /// The line `key` is set on, or the section header's when it is absent.
    pub fn line_of(&self, key: &str) -> usize {
        self.entry(key).map_or(self.section.line, |e| e.line)
    }

    /// The entry setting `key`, if the file sets it.
    pub fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.section.entries.iter().find(|e| e.key == key)
    }

    /// An error about `key` on `key`'s line (or the header's when unset).
    pub fn error(&self, key: &str, message: String) -> ConfigError {
        invalid(self.path, Some(self.line_of(key)), Some(format!("{} {key}", self.label)), message)
    }

    /// The value the file sets for `key`, read by `validate`; `None` when unset.
    pub fn optional<T>(
        &self,
        key: &str,
        validate: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.entry(key) {
            None => Ok(None),
            Some(entry) => validate(&entry.value).map(Some).map_err(|message| self.error(key, message)),
        }
    }

    /// The value of `key` read by `validate`: what the file sets, else the
    /// key table's default; a required key that is unset is an error that
    /// shows an example.
    pub fn value<T>(
        &self,
        key: &str,
        validate: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        if let Some(entry) = self.entry(key) {
            return validate(&entry.value).map_err(|message| self.error(key, message));
        }
        match keys::find(self.section.kind.section(), key).map(|k| k.unset) {
            Some(Unset::Default(text)) => validate(text).map_err(|message| {
                self.error(key, format!("the default {text:?} is refused ({message}); set it"))
            }),
            Some(Unset::Required { example }) => {
                Err(self.error(key, format!("missing; add a line such as `{key} = {example}`")))
            }
            Some(Unset::Off) | None => Err(self.error(key, "has no default; set it".into())),
        }
    }
}
