//! What every section of docs/BENCHMARKS.md shares: the run conditions it states (machine, load
//! average), its verdict words, and replacing one marked section of the file.

/// `N cores, CPU model` of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

/// The 1, 5 and 15 minute load averages (the machine is shared: a section states them).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// `doc` with the text from `begin` through `end` replaced by `section` (which carries its own
/// markers); `None` when `doc` has no such section.
pub fn replace_between(doc: &str, begin: &str, end: &str, section: &str) -> Option<String> {
    let b = doc.find(begin)?;
    let e = b + doc[b..].find(end)?;
    let tail = &doc[e + end.len()..];
    Some(format!("{}{}{tail}", &doc[..b], section.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_marked_section() {
        let doc = "# B\n\n<!-- a -->\nold\n<!-- /a -->\n\n## C\n";
        let new = replace_between(
            doc,
            "<!-- a -->",
            "<!-- /a -->",
            "<!-- a -->\nnew\n<!-- /a -->\n",
        );
        assert_eq!(
            new.as_deref(),
            Some("# B\n\n<!-- a -->\nnew\n<!-- /a -->\n\n## C\n")
        );
        assert_eq!(
            replace_between("# B\n", "<!-- a -->", "<!-- /a -->", "x"),
            None
        );
        assert_eq!(verdict(true), "met");
        assert!(machine().contains("cores"));
    }
}
