//! Tables, the chart and the bench/README.md sections made from [`Figures`].

use std::process::Command;
use std::time::Duration;

use smithers_bench::{Summary, workspace_root};

use crate::measure::{Figures, Outcome, Plan};

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One row of a comparison: label, ours, theirs, ratio (how many times
/// better ours is; none when either side has no figure), target ratio.
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) ours: String,
    pub(crate) theirs: String,
    pub(crate) ratio: Option<f64>,
    pub(crate) target: Option<f64>,
}

/// Which way a figure is better.
#[derive(Clone, Copy)]
pub(crate) enum Better {
    Lower,
    Higher,
}

/// A row from two outcomes: `show` formats a value (ours, theirs may use
/// other precision), `better` says how the ratio is taken.
pub(crate) fn row(
    label: &str,
    ours: &Outcome<f64>,
    theirs: &Outcome<f64>,
    show: (&dyn Fn(f64) -> String, &dyn Fn(f64) -> String),
    better: Better,
    target: Option<f64>,
) -> Row {
    let text = |o: &Outcome<f64>, f: &dyn Fn(f64) -> String| match o {
        Ok(v) => f(*v),
        Err(why) => why.clone(),
    };
    let ratio = match (ours, theirs, better) {
        (Ok(o), Ok(t), Better::Lower) => Some(t / o),
        (Ok(o), Ok(t), Better::Higher) => Some(o / t),
        _ => None,
    };
    Row {
        label: label.into(),
        ours: text(ours, show.0),
        theirs: text(theirs, show.1),
        ratio,
        target,
    }
}

pub(crate) fn peer_rows(ours: &Figures, theirs: &Figures) -> Vec<Row> {
    let millis = (
        &(|v: f64| format!("{v:.3} ms")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} ms")) as &dyn Fn(f64) -> String,
    );
    let per_sec = (
        &(|v: f64| format!("{v:.0} /s")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} /s")) as &dyn Fn(f64) -> String,
    );
    let mebi = (
        &(|v: f64| format!("{v:.1} MiB")) as &dyn Fn(f64) -> String,
        &(|v: f64| format!("{v:.1} MiB")) as &dyn Fn(f64) -> String,
    );
    let p50 = |s: &Outcome<Summary>| s.as_ref().map(|s| ms(s.p50)).map_err(Clone::clone);
    let p95 = |s: &Outcome<Summary>| s.as_ref().map(|s| ms(s.p95)).map_err(Clone::clone);
    let missing = || Err("not measured".to_string());

    let mut rows = vec![
        row(
            "(a) start → RunStarted p50",
            &p50(&ours.start),
            &p50(&theirs.start),
            millis,
            Better::Lower,
            Some(10.0),
        ),
        row(
            "(a) start → RunStarted p95",
            &p95(&ours.start),
            &p95(&theirs.start),
            millis,
            Better::Lower,
            None,
        ),
    ];
    let per_step = |f: &Figures, n: &u64| {
        f.steps
            .get(n)
            .map_or_else(missing, |o| o.as_ref().map(|s| s.0).map_err(Clone::clone))
    };
    for n in ours.steps.keys() {
        rows.push(row(
            &format!("(b) per-step overhead, N = {n}"),
            &per_step(ours, n),
            &per_step(theirs, n),
            millis,
            Better::Lower,
            Some(10.0),
        ));
    }
    rows.push(row(
        "(c) approve → NodeStarted p50",
        &p50(&ours.approve),
        &p50(&theirs.approve),
        millis,
        Better::Lower,
        Some(10.0),
    ));
    rows.push(row(
        "(c) approve → NodeStarted p95",
        &p95(&ours.approve),
        &p95(&theirs.approve),
        millis,
        Better::Lower,
        None,
    ));
    let rate = |f: &Figures, c: &usize| f.throughput.get(c).cloned().unwrap_or_else(missing);
    for c in ours.throughput.keys() {
        rows.push(row(
            &format!("(d) hello runs/s, concurrency {c}"),
            &rate(ours, c),
            &rate(theirs, c),
            per_sec,
            Better::Higher,
            None,
        ));
    }
    rows.push(row(
        "(e) RSS idle",
        &Ok(mib(ours.rss_idle_kib)),
        &Ok(mib(theirs.rss_idle_kib)),
        mebi,
        Better::Lower,
        Some(5.0),
    ));
    let parked = |f: &Figures| {
        f.parked_rss
            .as_ref()
            .map(|(kib, _)| mib(*kib))
            .map_err(Clone::clone)
    };
    rows.push(row(
        &format!("(e) RSS with {} parked runs", ours.parked),
        &parked(ours),
        &parked(theirs),
        mebi,
        Better::Lower,
        Some(5.0),
    ));
    rows
}

pub(crate) fn peer_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | smithers-host | Smithers 0.32.0 | ours is | target | met |\n|---|---:|---:|---:|---:|:-:|\n",
    );
    for r in rows {
        let target = r.target.map(|t| format!("≥ {t:.0}×")).unwrap_or_default();
        let met = match (r.target, r.ratio) {
            (Some(t), Some(ratio)) if ratio >= t => "yes",
            (Some(_), Some(_)) => "**no**",
            (Some(_), None) => "n/a",
            (None, _) => "",
        };
        let ratio = r.ratio.map(|v| format!("{v:.1}×")).unwrap_or("–".into());
        out.push_str(&format!(
            "| {} | {} | {} | {ratio} | {target} | {met} |\n",
            r.label, r.ours, r.theirs
        ));
    }
    out
}

/// A horizontal bar chart of the ratios (log scale), hand-written SVG.
pub(crate) fn chart(rows: &[Row], caption: &str) -> String {
    let (left, width, row_h, top) = (300.0, 420.0, 26.0, 46.0);
    let max = rows
        .iter()
        .filter_map(|r| r.ratio)
        .fold(10.0f64, f64::max)
        .log10()
        .ceil();
    let scale = |ratio: f64| (ratio.max(1.0).log10() / max) * width;
    let height = top + rows.len() as f64 * row_h + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">smithers-host vs Smithers 0.32.0: how many times better (log scale)</text>\n\
         <text x=\"10\" y=\"36\" fill=\"#555\">{caption}</text>\n",
        w = left + width + 90.0,
    );
    for decade in 0..=max as u32 {
        let x = left + scale(10f64.powi(decade as i32));
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{}\" stroke=\"#ddd\"/>\n<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}×</text>\n",
            height - 30.0,
            height - 16.0,
            10u64.pow(decade)
        ));
    }
    let ten = left + scale(10.0);
    svg.push_str(&format!(
        "<line x1=\"{ten}\" y1=\"{top}\" x2=\"{ten}\" y2=\"{}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n",
        height - 30.0
    ));
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 8.0,
            y + 16.0,
            xml_escape(&r.label),
        ));
        let Some(ratio) = r.ratio else {
            svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"#c00\">no figure: {}</text>\n",
                left + 6.0,
                y + 16.0,
                xml_escape(if is_failure(&r.theirs) {
                    &r.theirs
                } else {
                    &r.ours
                }),
            ));
            continue;
        };
        let met = r.target.is_none_or(|t| ratio >= t);
        let color = if met { "#2a7ab0" } else { "#d9822b" };
        let bar = scale(ratio).max(1.0);
        svg.push_str(&format!(
            "<rect x=\"{left}\" y=\"{}\" width=\"{bar:.1}\" height=\"{}\" fill=\"{color}\"/>\n<text x=\"{:.1}\" y=\"{}\">{ratio:.1}×</text>\n",
            y + 4.0,
            row_h - 8.0,
            left + bar + 6.0,
            y + 16.0,
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Whether a cell holds why there is no figure rather than a figure.
pub(crate) fn is_failure(cell: &str) -> bool {
    ["failed", "no result", "not measured"]
        .iter()
        .any(|p| cell.starts_with(p))
}

/// "5/3/3 runs at N = 10/100/400": runs per N of a plan.
pub(crate) fn reps(plan: &Plan) -> String {
    let join = |f: &dyn Fn(&(u64, usize)) -> String| {
        plan.steps.iter().map(f).collect::<Vec<_>>().join("/")
    };
    format!(
        "{} runs at N = {}",
        join(&|s| s.1.to_string()),
        join(&|s| s.0.to_string())
    )
}

pub(crate) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn ours_alone_table(f: &Figures) -> String {
    let check = |ok: bool| if ok { "yes" } else { "**no**" };
    let latency = |o: &Outcome<Summary>, target_ms: f64| match o {
        Ok(s) => (
            format!("p50 {:.2} ms, p95 {:.2} ms", ms(s.p50), ms(s.p95)),
            check(ms(s.p50) <= target_ms),
        ),
        Err(why) => (why.clone(), "n/a"),
    };
    let mut out = String::from("| figure | measured | target | met |\n|---|---:|---:|:-:|\n");
    let (text, met) = latency(&f.start, 2.0);
    out.push_str(&format!(
        "| `POST /v1/runs` → `RunStarted` on SSE | {text} | p50 ≤ 2 ms | {met} |\n"
    ));
    let (text, met) = latency(&f.approve, 5.0);
    out.push_str(&format!(
        "| approve → next `NodeStarted` on SSE | {text} | p50 ≤ 5 ms | {met} |\n"
    ));
    let best = f
        .throughput
        .values()
        .filter_map(|r| r.as_ref().ok().copied())
        .fold(0.0, f64::max);
    let rates: Vec<String> = f
        .throughput
        .iter()
        .map(|(c, r)| match r {
            Ok(r) => format!("{r:.0} at c={c}"),
            Err(why) => format!("c={c}: {why}"),
        })
        .collect();
    out.push_str(&format!(
        "| sustained `hello` runs/s | {} | ≥ 500 | {} |\n",
        rates.join(", "),
        check(best >= 500.0)
    ));
    let (text, met) = match &f.parked_rss {
        Ok((kib, took)) => (
            format!(
                "{:.1} MiB (idle {:.1} MiB; parking took {:.1} s)",
                mib(*kib),
                mib(f.rss_idle_kib),
                took.as_secs_f64()
            ),
            check(*kib as f64 * 1024.0 <= 200e6),
        ),
        Err(why) => (why.clone(), "n/a"),
    };
    out.push_str(&format!(
        "| RSS with {} parked `approval` runs | {text} | ≤ 200 MB | {met} |\n",
        f.parked
    ));
    out
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`
/// in bench/README.md, or appends a new section.
pub(crate) fn write_section(name: &str, heading: &str, body: &str) {
    let path = workspace_root().join("bench/README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let section = format!("{start}\n{body}{end}\n");
    let text = match (text.find(&start), text.find(&end)) {
        (Some(s), Some(e)) if s < e => {
            // Whatever followed the section keeps one blank line before it.
            let rest = text[e + end.len()..].trim_start_matches('\n');
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &text[..s])
        }
        _ => format!(
            "{}\n{heading}\n\n{section}",
            text.trim_end_matches('\n').to_string() + "\n"
        ),
    };
    std::fs::write(&path, text).expect("write bench/README.md");
}

/// The 1-minute load average: other work on the same cores skews every figure.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
