//! Server-rendered HTML: escaping, the page shell and its stylesheet (inline: no build step, no
//! CDN), and the small pieces both pages use.

use std::fmt::Write;

/// `s` safe inside HTML text and attribute values: every string the page shows goes through
/// this, so an appeal's evidence of `<script>` renders as text.
pub fn esc(s: &str) -> String {
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

/// A duration as an operator reads it: `2 d 4 h`, `3 h 10 min`, `45 s`.
pub fn span(ms: u64) -> String {
    let s = ms / 1_000;
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3_600, (s % 3_600) / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{s} s")
    }
}

/// A bar `fill` of `limit` wide, with its text (`180 / 250 (72 %)`; unlimited: the count).
pub fn fill_bar(fill: u64, limit: Option<u64>) -> String {
    match limit {
        None | Some(0) => {
            format!(r#"<span class="num">{fill}</span> <span class="muted">(unlimited)</span>"#)
        }
        Some(l) => {
            let pct = (fill.saturating_mul(100) / l).min(100);
            let class = if pct >= 100 {
                "full"
            } else if pct >= 80 {
                "warn"
            } else {
                "ok"
            };
            format!(
                r#"<div class="bar" title="{fill} of {l}"><div class="{class}" style="width:{pct}%"></div></div><span class="num" data-fill="{fill}" data-limit="{l}">{fill} / {l} ({pct} %)</span>"#
            )
        }
    }
}

/// A labelled badge (`RED`, `RESTRICTED`, …); `kind` picks its colour.
pub fn badge(kind: &str, text: &str) -> String {
    format!(r#"<span class="badge {kind}">{}</span>"#, esc(text))
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem;color:#1d2330;background:#f7f8fa}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
a{color:#0b57d0;text-decoration:none} a:hover{text-decoration:underline}
.muted{color:#6b7280} .num{font-variant-numeric:tabular-nums}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;width:100%}
th,td{padding:.4rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:middle;white-space:nowrap}
th{background:#eef1f5;font-weight:600;position:sticky;top:0} th a{color:inherit}
.bar{display:inline-block;width:110px;height:10px;background:#e5e7eb;border-radius:5px;margin-right:.4rem;vertical-align:middle;overflow:hidden}
.bar div{height:100%} .ok{background:#16a34a} .warn{background:#f59e0b} .full{background:#dc2626}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:12px;font-weight:600;margin-right:.2rem}
.badge.green{background:#dcfce7;color:#166534} .badge.yellow{background:#fef9c3;color:#854d0e}
.badge.red{background:#fee2e2;color:#991b1b} .badge.grey{background:#e5e7eb;color:#374151}
.badge.blue{background:#dbeafe;color:#1e40af}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;background:#fff;padding:1rem;box-shadow:0 1px 2px #0002}
dt{font-weight:600} dd{margin:0}
.pager{margin:.8rem 0} .pager a,.pager span{margin-right:.8rem}
svg{background:#fff;box-shadow:0 1px 2px #0002}
"#;

/// A whole page: `title` (escaped here), `body` (already HTML), refreshing every
/// `refresh_s` seconds.
pub fn page(title: &str, refresh_s: u32, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2_048);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta http-equiv="refresh" content="{refresh_s}"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>"#,
        esc(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn spans_read_like_an_operator_says_them() {
        assert_eq!(span(2 * 86_400_000 + 4 * 3_600_000 + 60_000), "2 d 4 h");
        assert_eq!(span(3 * 3_600_000 + 10 * 60_000), "3 h 10 min");
        assert_eq!(span(45_000), "45 s");
    }
}
