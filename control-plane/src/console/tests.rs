//! The embedded console: served with its types and headers, self-contained (no file refers to
//! another host or to a file that is not embedded), every page listed in `app.js` embedded.

use super::*;
use crate::api::tests::{admin, config};
use crate::server::start;
use std::collections::BTreeSet;

/// Relative module paths a JavaScript file imports (`from './x.js'`, `import('./pages/y.js')`).
fn imports(js: &str) -> Vec<String> {
    let mut out = Vec::new();
    for quote in ['\'', '"'] {
        let needle = format!("{quote}./");
        let mut rest = js;
        while let Some(i) = rest.find(&needle) {
            let tail = &rest[i + needle.len()..];
            let Some(end) = tail.find(quote) else { break };
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn the_console_is_self_contained() {
    let names: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
    assert_eq!(names.len(), ASSETS.len(), "an asset listed twice");
    for a in ASSETS {
        // No CDN, no fonts or scripts from elsewhere: nothing is fetched from another host
        // (the SVG namespace is a name, not an address).
        let body = a.body.replace("'http://www.w3.org/2000/svg'", "");
        for scheme in ["http://", "https://", "//cdn", "url(http"] {
            assert!(!body.contains(scheme), "{} mentions {scheme}", a.path);
        }
        if a.path.ends_with(".js") {
            let dir = a.path.rsplit_once('/').map_or("", |(d, _)| d);
            for m in imports(a.body) {
                let full = if dir.is_empty() {
                    m.clone()
                } else {
                    format!("{dir}/{m}")
                };
                let full = full.replace("pages/../", "");
                assert!(
                    names.contains(full.as_str()),
                    "{} imports {m}, not embedded",
                    a.path
                );
            }
        }
    }
    // Every embedded page is in the navigation and the other way round.
    let app = asset("app.js").unwrap().body;
    let pages: BTreeSet<String> = names
        .iter()
        .filter_map(|n| n.strip_prefix("pages/"))
        .map(String::from)
        .collect();
    let listed: BTreeSet<String> = imports(app)
        .into_iter()
        .filter_map(|m| m.strip_prefix("pages/").map(String::from))
        .collect();
    assert_eq!(pages, listed);
    assert!(imports(asset("").unwrap().body).contains(&"app.js".to_string()));
}

#[tokio::test]
async fn assets_are_served_without_the_token_with_their_types() {
    let tmp = tempfile::tempdir().unwrap();
    let r = start(&config(tmp.path())).await.unwrap();
    let a = admin(&r, "GET", "/console/", None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("<script type=\"module\" src=\"./app.js\">"),
        "{}",
        a.body
    );
    for asset in ASSETS {
        let a = admin(&r, "GET", &format!("/console/{}", asset.path), None).await;
        assert_eq!(a.status, 200, "{}", asset.path);
        assert_eq!(a.body, asset.body);
        assert_eq!(
            a.content_type.as_deref(),
            Some(asset.content_type),
            "{}",
            asset.path
        );
    }
    for missing in [
        "/console/nope.js",
        "/console/pages/nope.js",
        "/console/pages/",
    ] {
        let a = admin(&r, "GET", missing, None).await;
        assert_eq!(a.status, 404, "{missing}");
        assert_eq!(a.json()["code"], "not_found");
    }
    let a = admin(&r, "POST", "/console/app.js", None).await;
    assert_eq!(a.status, 405);
    // The data stays behind the token.
    let a = admin(&r, "GET", "/v1/reviews", None).await;
    assert_eq!(a.status, 401);
    r.shutdown().await.unwrap();
}
