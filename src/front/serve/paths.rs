//! What a request path names: a container, a folder listing, the health check, or nothing.
//!
//! The one rule that matters for safety: only `*.qltx` files inside the served PATH are ever
//! reachable. A request path is split into segments *before* percent-decoding, and a segment that
//! decodes to `.`, `..`, anything starting with `.` (hidden files), or anything holding `/`, `\`
//! or NUL is refused. Every candidate is then looked up through the vault layer
//! ([`Vault::stat`]): names the vault does not show are not found, and its storage never follows
//! a symlink out of PATH. Refusals are 404s: a client learns nothing about the file system
//! outside the vault. A folder and a container with the same shown name (`x/`, `x.qltx`): the
//! folder wins, as in every listing of the vault.
//!
//! URL layout, for a vault `V`: `V/a/b.mp4.qltx` is `/a/b.mp4`; the folder `V/a` is `/a/`
//! (`/a` redirects there); `/a/?format=json` and `/a/index.json` list it as JSON; `/health` is
//! the health check. For a single container `movie.mp4.qltx`: `/` and `/movie.mp4`.

use crate::storage::EntryKind;
use crate::vault::{naming, Vault};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Reserved path of the health check.
pub const HEALTH_PATH: &str = "/health";

/// What the server was pointed at.
#[derive(Clone, Debug)]
pub enum Root {
    /// One container, at `/` and `/NAME`: `file` in the vault of its folder.
    Single {
        vault: Vault,
        file: PathBuf,
        name: String,
    },
    /// A folder of containers.
    Vault { vault: Vault },
}

/// What a request path resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Health,
    /// A container (its path in the vault) and its plaintext name.
    Container {
        file: PathBuf,
        name: String,
    },
    /// A folder (its path in the vault) and its URL path, ending in `/`.
    Folder {
        dir: PathBuf,
        url: String,
        json: bool,
    },
    /// A folder URL without its trailing slash: redirect here.
    Redirect(String),
    NotFound,
}

impl Root {
    /// Decides how to serve `path`: a container file, or a folder of them.
    pub fn new(path: &Path) -> std::io::Result<Root> {
        let canonical = fs::canonicalize(path)?;
        if canonical.is_dir() {
            return Ok(Root::Vault {
                vault: Vault::local(&canonical)?,
            });
        }
        let (Some(folder), Some(file_name)) = (canonical.parent(), canonical.file_name()) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let name = naming::plaintext_name(file_name).unwrap_or(file_name);
        Ok(Root::Single {
            vault: Vault::local(folder)?,
            name: name.to_string_lossy().into_owned(),
            file: file_name.into(),
        })
    }

    /// The vault requests are served from (for a single container, the vault of its folder).
    pub fn vault(&self) -> &Vault {
        match self {
            Root::Single { vault, .. } | Root::Vault { vault } => vault,
        }
    }

    /// Resolves a request's path (as sent, still percent-encoded) and query.
    pub fn resolve(&self, raw_path: &str, query: Option<&str>) -> Target {
        if raw_path == HEALTH_PATH {
            return Target::Health;
        }
        let Some(segments) = decode_segments(raw_path) else {
            return Target::NotFound;
        };
        let wants_json = query.is_some_and(|q| q.split('&').any(|p| p == "format=json"));
        match self {
            Root::Single { file, name, .. } => {
                let hit = match segments.as_slice() {
                    [only] => only.is_empty() || only.as_bytes() == name.as_bytes(),
                    _ => false,
                };
                if hit {
                    Target::Container {
                        file: file.clone(),
                        name: name.clone(),
                    }
                } else {
                    Target::NotFound
                }
            }
            Root::Vault { vault } => resolve_in_vault(vault, raw_path, &segments, wants_json),
        }
    }
}

fn resolve_in_vault(vault: &Vault, raw_path: &str, segments: &[OsString], json: bool) -> Target {
    let (last, parents) = segments.split_last().expect("a path has at least one segment");
    let mut rel = PathBuf::new();
    for s in parents {
        rel.push(s);
    }
    let folder_url = |rel: &Path| {
        let mut url = String::from("/");
        for c in rel.iter() {
            url.push_str(&encode_segment(c.as_bytes()));
            url.push('/');
        }
        url
    };
    let is = |path: &Path, kind: EntryKind| vault.stat(path).is_ok_and(|e| e.kind == kind);
    if last.is_empty() {
        return if is(&rel, EntryKind::Folder) {
            Target::Folder {
                url: folder_url(&rel),
                dir: rel,
                json,
            }
        } else {
            Target::NotFound
        };
    }
    // A folder first: it wins over a container of the same shown name, as in listings.
    if is(&rel.join(last), EntryKind::Folder) {
        return Target::Redirect(format!("{raw_path}/"));
    }
    let file = rel.join(naming::container_name(last));
    if is(&file, EntryKind::Object) {
        return Target::Container {
            file,
            name: last.to_string_lossy().into_owned(),
        };
    }
    if last.as_bytes() == b"index.json" && is(&rel, EntryKind::Folder) {
        return Target::Folder {
            url: folder_url(&rel),
            dir: rel,
            json: true,
        };
    }
    Target::NotFound
}

/// Splits `/a/b%20c/` into `["a", "b c", ""]`, refusing anything that could step outside the
/// folder it names. `None` means 404.
fn decode_segments(raw_path: &str) -> Option<Vec<OsString>> {
    let rest = raw_path.strip_prefix('/')?;
    let raw: Vec<&str> = rest.split('/').collect();
    let count = raw.len();
    let mut out = Vec::with_capacity(count);
    for (i, seg) in raw.into_iter().enumerate() {
        let bytes: Vec<u8> = percent_decode(seg.as_bytes()).collect();
        let is_last = i + 1 == count;
        if bytes.is_empty() && !is_last {
            return None; // "//": an empty name in the middle
        }
        if naming::is_hidden(&bytes) || bytes.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) {
            return None; // ".", "..", hidden names, encoded separators
        }
        out.push(OsString::from_vec(bytes));
    }
    Some(out)
}

/// Characters escaped in a URL path segment we generate.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'\'');

/// Percent-encodes one path segment (any bytes; invalid UTF-8 is escaped byte by byte).
pub fn encode_segment(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => utf8_percent_encode(s, SEGMENT).to_string(),
        Err(_) => bytes.iter().map(|b| format!("%{b:02X}")).collect(),
    }
}

/// One line of a folder listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingEntry {
    /// Display name (lossy UTF-8), without `.qltx` for containers.
    pub name: String,
    /// The name as a URL path segment (a folder's ends in `/`).
    pub href: String,
    pub is_dir: bool,
    /// Plaintext size, read from the container's index without the key; `None` for folders and
    /// for files whose structure cannot be read.
    pub size: Option<u64>,
    pub modified: Option<SystemTime>,
}

/// Lists the sub-folders and containers of the folder `dir` of `vault` that a request could
/// reach ([`Vault::list`]: hidden names, non-container files and symlinks leaving the vault are
/// left out). Container sizes come from the vault's key-free info, read once per version.
/// Folders first, then by name.
pub fn list(vault: &Vault, dir: &Path) -> std::io::Result<Vec<ListingEntry>> {
    let listing = vault.list(dir)?;
    let mut entries = Vec::with_capacity(listing.folders.len() + listing.containers.len());
    for f in listing.folders {
        entries.push(ListingEntry {
            name: f.name.to_string_lossy().into_owned(),
            href: format!("{}/", encode_segment(f.name.as_bytes())),
            is_dir: true,
            size: None,
            modified: Some(f.entry.modified),
        });
    }
    for c in listing.containers {
        entries.push(ListingEntry {
            name: c.name.to_string_lossy().into_owned(),
            href: encode_segment(c.name.as_bytes()),
            is_dir: false,
            size: vault.info(&c.path, &c.entry).ok().map(|i| i.plaintext_size),
            modified: Some(c.entry.modified),
        });
    }
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    Ok(entries)
}

/// Minimal styling for the listing page: readable in a browser, no external resources.
const LISTING_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;\
padding:0 1em;color:#222}h1{font-size:1.3em;font-weight:600}table{border-collapse:collapse;width:100%}\
th,td{padding:.3em .8em;text-align:left}th{border-bottom:1px solid #ccc;font-weight:600}\
tr:nth-child(even) td{background:#f5f5f5}td.size{text-align:right;font-variant-numeric:tabular-nums}\
th.size{text-align:right}a{text-decoration:none}a:hover{text-decoration:underline}\
@media(prefers-color-scheme:dark){body{background:#111;color:#ddd}a{color:#8ab4f8}\
tr:nth-child(even) td{background:#1c1c1c}th{border-color:#444}}";

/// Shows each `<time>` in the browser's own time zone and locale; without scripts the page
/// shows UTC.
const LISTING_SCRIPT: &str = "for(const t of document.querySelectorAll('time[datetime]')){\
const d=new Date(t.dateTime);if(!isNaN(d)){t.title=t.textContent;\
t.textContent=d.toLocaleString(undefined,{dateStyle:'medium',timeStyle:'short'});}}";

/// The listing as a small HTML page (names escaped, links percent-encoded): sizes in binary
/// units with the exact byte count as a tooltip, dates shown in the browser's local time.
pub fn listing_html(url: &str, entries: &[ListingEntry]) -> String {
    let title = html_escape(&String::from_utf8_lossy(
        &percent_decode(url.as_bytes()).collect::<Vec<u8>>(),
    ));
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Index of {title}</title>\n<style>{LISTING_STYLE}</style></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th class=\"size\">Size</th><th>Modified</th></tr>\n"
    );
    if url != "/" {
        page.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        let shown = if e.is_dir {
            format!("{}/", e.name)
        } else {
            e.name.clone()
        };
        let size = e
            .size
            .map(|s| format!("<span title=\"{s} bytes\">{}</span>", human_size(s)))
            .unwrap_or_default();
        let modified = e
            .modified
            .map(|t| {
                let utc = rfc3339(t);
                let shown = format!("{} UTC", utc.trim_end_matches('Z').replacen('T', " ", 1));
                format!("<time datetime=\"{utc}\">{shown}</time>")
            })
            .unwrap_or_default();
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"size\">{size}</td><td>{modified}</td></tr>\n",
            html_escape(&e.href),
            html_escape(&shown),
        ));
    }
    page.push_str(&format!(
        "</table>\n<script>{LISTING_SCRIPT}</script>\n</body></html>\n"
    ));
    page
}

/// A size for people: bytes below 1 KiB, then KiB, MiB, GiB, TiB with one decimal below 10
/// (`999 B`, `1.5 KiB`, `12 MiB`, `3.2 GiB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// The listing as JSON: `{"path": "/a/", "entries": [{"name", "type", "size", "modified"}]}`.
pub fn listing_json(url: &str, entries: &[ListingEntry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "type": if e.is_dir { "dir" } else { "file" },
                "href": e.href,
                "size": e.size,
                "modified": e.modified.map(rfc3339),
            })
        })
        .collect();
    serde_json::json!({ "path": url, "entries": items }).to_string()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("vault/sub")).unwrap();
        fs::write(dir.path().join("vault/a.txt.qltx"), b"x").unwrap();
        fs::write(dir.path().join("vault/sub/b c.mp4.qltx"), b"x").unwrap();
        fs::write(dir.path().join("vault/plain.txt"), b"x").unwrap();
        fs::write(dir.path().join("outside.qltx"), b"x").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("outside.qltx"),
            dir.path().join("vault/link.qltx"),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("vault/up")).unwrap();
        let root = Root::new(&dir.path().join("vault")).unwrap();
        (dir, root)
    }

    fn container_name(t: Target) -> Option<String> {
        match t {
            Target::Container { name, .. } => Some(name),
            _ => None,
        }
    }

    #[test]
    fn containers_by_name_without_extension() {
        let (_d, root) = vault();
        assert_eq!(
            container_name(root.resolve("/a.txt", None)).as_deref(),
            Some("a.txt")
        );
        assert_eq!(
            container_name(root.resolve("/sub/b%20c.mp4", None)).as_deref(),
            Some("b c.mp4")
        );
        assert_eq!(root.resolve("/a.txt.qltx", None), Target::NotFound);
        assert_eq!(root.resolve("/plain.txt", None), Target::NotFound);
        assert_eq!(root.resolve("/health", None), Target::Health);
    }

    #[test]
    fn folders_redirect_and_list() {
        let (_d, root) = vault();
        assert_eq!(root.resolve("/sub", None), Target::Redirect("/sub/".into()));
        assert!(matches!(root.resolve("/", None), Target::Folder { json: false, ref url, .. } if url == "/"));
        assert!(
            matches!(root.resolve("/sub/", Some("format=json")), Target::Folder { json: true, ref url, .. } if url == "/sub/")
        );
        assert!(
            matches!(root.resolve("/sub/index.json", None), Target::Folder { json: true, ref url, .. } if url == "/sub/")
        );
        assert!(matches!(
            root.resolve("/index.json", None),
            Target::Folder { json: true, .. }
        ));
    }

    #[test]
    fn traversal_and_escaping_symlinks_are_not_found() {
        let (_d, root) = vault();
        for p in [
            "/../outside",
            "/sub/../a.txt",
            "/%2e%2e/outside",
            "/%2E%2E/outside",
            "/sub/%2e%2e/a.txt",
            "/.%2e/outside",
            "/sub%2f..%2foutside",
            "//outside",
            "/link",
            "/up/outside",
            "/./a.txt",
            "/a.txt%00",
            "/..%5coutside",
            "relative",
            "",
        ] {
            assert_eq!(root.resolve(p, None), Target::NotFound, "{p}");
        }
        // A symlink that leaves and comes back names a container inside the vault: allowed.
        assert_eq!(
            container_name(root.resolve("/up/vault/a.txt", None)).as_deref(),
            Some("a.txt")
        );
    }

    #[test]
    fn single_container_at_root_and_by_name() {
        let (d, _) = vault();
        let root = Root::new(&d.path().join("vault/a.txt.qltx")).unwrap();
        assert_eq!(container_name(root.resolve("/", None)).as_deref(), Some("a.txt"));
        assert_eq!(
            container_name(root.resolve("/a.txt", None)).as_deref(),
            Some("a.txt")
        );
        assert_eq!(root.resolve("/b", None), Target::NotFound);
        assert_eq!(root.resolve("/a.txt/", None), Target::NotFound);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 - 1, "10 KiB"),
            (1_572_864, "1.5 MiB"),
            (200 << 20, "200 MiB"),
            (3_435_973_837, "3.2 GiB"),
            (u64::MAX, "16384 PiB"),
        ];
        for (bytes, shown) in cases {
            assert_eq!(human_size(bytes), shown, "{bytes}");
        }
    }

    #[test]
    fn listing_leaves_out_hidden_plain_and_escaping_entries() {
        let (_d, root) = vault();
        let vault = root.vault();
        let names: Vec<(String, bool)> = list(vault, Path::new(""))
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.is_dir))
            .collect();
        assert_eq!(
            names,
            vec![("sub".to_string(), true), ("a.txt".to_string(), false)]
        );
        let html = listing_html("/", &list(vault, Path::new("sub")).unwrap());
        assert!(html.contains("<a href=\"b%20c.mp4\">b c.mp4</a>"), "{html}");
    }

    #[test]
    fn a_folder_wins_over_a_container_of_the_same_name() {
        let (d, root) = vault();
        fs::write(d.path().join("vault/sub.qltx"), b"x").unwrap();
        assert_eq!(root.resolve("/sub", None), Target::Redirect("/sub/".into()));
        let names: Vec<String> = list(root.vault(), Path::new(""))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["sub", "a.txt"], "as in the mount");
    }

    #[test]
    fn names_are_escaped() {
        let e = ListingEntry {
            name: "<script>&\"".into(),
            href: encode_segment(b"<script>&\""),
            is_dir: false,
            size: Some(3),
            modified: None,
        };
        let html = listing_html("/x%20y/", std::slice::from_ref(&e));
        assert!(html.contains("&lt;script&gt;&amp;&quot;"), "{html}");
        assert!(html.contains("href=\"%3Cscript%3E&amp;%22\""), "{html}");
        assert!(html.contains("Index of /x y/"));
        let json: serde_json::Value = serde_json::from_str(&listing_json("/", &[e])).unwrap();
        assert_eq!(json["entries"][0]["name"], "<script>&\"");
        assert_eq!(json["entries"][0]["size"], 3);
    }
}
