//! fieldlab-ui: the web UI's files, embedded in the binary.
//!
//! Why it exists: `fieldlab up` must give a browser a working dashboard with nothing else
//! installed and no network at run time (no CDN). The UI is plain ES modules with no build step;
//! the one third-party library (uPlot, for charts) is vendored by `scripts/ui-vendor.sh`. This
//! crate only holds the bytes and their metadata; `fieldlab-server` serves them.
//!
//! Architecture invariant: no I/O and no HTTP types here; the asset set is fixed at compile time.

use std::collections::HashMap;
use std::sync::OnceLock;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path relative to `assets/`, e.g. `js/app.js`.
    pub path: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// Strong validator from the content (CRC-32 and length), quoted as HTTP wants it.
    pub etag: &'static str,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn table() -> &'static HashMap<&'static str, Asset> {
    static TABLE: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    TABLE.get_or_init(|| {
        generated::FILES
            .iter()
            .map(|&(path, body)| {
                let etag: &'static str = Box::leak(
                    format!("\"{:08x}-{:x}\"", crc32fast::hash(body), body.len()).into_boxed_str(),
                );
                (
                    path,
                    Asset {
                        path,
                        body,
                        content_type: content_type(path),
                        etag,
                    },
                )
            })
            .collect()
    })
}

/// The asset at `path` (relative, without a leading slash), if embedded.
pub fn get(path: &str) -> Option<Asset> {
    table().get(path).copied()
}

/// The page every UI route starts from.
pub fn index() -> Asset {
    get("index.html").expect("assets/index.html is embedded")
}

/// Every embedded path, sorted.
pub fn paths() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_vendored_chart_library_are_embedded_with_types() {
        let i = index();
        assert!(std::str::from_utf8(i.body)
            .unwrap()
            .contains("<!doctype html>"));
        assert_eq!(i.content_type, "text/html; charset=utf-8");
        let u = get("vendor/uplot/uPlot.iife.min.js").expect("uPlot vendored");
        assert_eq!(u.content_type, "text/javascript; charset=utf-8");
        assert!(
            get("vendor/uplot/LICENSE").is_some(),
            "license ships with the file"
        );
        assert!(get("nope.js").is_none());
    }

    /// Every `/ui/...` file that index.html loads or preloads is embedded.
    #[test]
    fn index_references_only_embedded_files() {
        let html = std::str::from_utf8(index().body).unwrap();
        let refs: Vec<&str> = html
            .split("\"/ui/")
            .skip(1)
            .map(|r| r.split('"').next().unwrap())
            .collect();
        assert!(refs.len() >= 5, "{refs:?}");
        for r in refs {
            assert!(
                get(r).is_some(),
                "index.html refers to /ui/{r}, which is not embedded"
            );
        }
    }

    #[test]
    fn etags_differ_when_content_differs() {
        let a = get("index.html").unwrap();
        let b = get("app.css").unwrap();
        assert_ne!(a.etag, b.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
    }

    /// Every relative `import ... from "./x.js"` / `"../x.js"` in the modules names an embedded
    /// file, so a renamed module cannot leave the browser with a 404 that only a browser test
    /// would notice.
    #[test]
    fn every_relative_module_import_resolves() {
        let mut checked = 0;
        for p in paths()
            .into_iter()
            .filter(|p| p.ends_with(".js") && p.starts_with("js/"))
        {
            let text = std::str::from_utf8(get(p).unwrap().body).unwrap();
            for line in text.lines().map(str::trim) {
                if !(line.starts_with("import ") || line.starts_with("export "))
                    || !line.contains(" from ")
                {
                    continue;
                }
                let Some(spec) = line
                    .rsplit(" from ")
                    .next()
                    .and_then(|r| r.split(['"', '\'']).nth(1))
                else {
                    continue;
                };
                let mut parts: Vec<&str> = p.split('/').collect();
                parts.pop();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    get(&target).is_some(),
                    "{p} imports {spec} ({target}), which is not embedded"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 10,
            "only {checked} imports found; is the scan broken?"
        );
    }
}
