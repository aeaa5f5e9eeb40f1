//! Reading `/metrics` text (the Prometheus exposition format) the way a dashboard does: one
//! parser for the sample lines, three questions asked of them.

use std::collections::BTreeSet;

/// One sample line: `name{label="value",…} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn has(&self, label: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| *k == label && v == value)
    }
}

/// Sum of the samples of `name` whose labels include all of `labels` (0 when none).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(metrics).filter(|s| s.name == name && labels.iter().all(|(k, v)| s.has(k, v))).map(|s| s.value).sum()
}

/// The value of the one series `name{labels}` (all of them, no others), if it is exposed.
pub fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(metrics)
        .find(|s| s.name == name && s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.has(k, v)))
        .map(|s| s.value)
}

/// Every value of `label` across the samples of `metric` (a histogram's buckets included).
pub fn label_values(metrics: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let bucket = format!("{metric}_bucket");
    samples(metrics)
        .filter(|s| s.name == metric || s.name == bucket)
        .flat_map(|s| s.labels.into_iter().filter(|(k, _)| *k == label).map(|(_, v)| v))
        .collect()
}

fn samples(metrics: &str) -> impl Iterator<Item = Sample<'_>> {
    metrics.lines().filter(|line| !line.starts_with('#')).filter_map(parse)
}

fn parse(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, label_text)) = series.split_once('{') else {
        return Some(Sample { name: series, labels: Vec::new(), value });
    };
    let mut labels = Vec::new();
    let mut rest = label_text.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        // The value runs to the first quote that is not escaped.
        let (mut text, mut chars) = (String::new(), after.char_indices());
        let end = loop {
            match chars.next()? {
                (_, '\\') => text.push(match chars.next()?.1 {
                    'n' => '\n',
                    escaped => escaped,
                }),
                (at, '"') => break at,
                (_, c) => text.push(c),
            }
        };
        labels.push((key, text));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(Sample { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total a counter\n\
        x_total{route=\"/v1/orders\",status=\"201\"} 3\n\
        x_total{route=\"/a,\\\"b\\\"\",status=\"500\"} 1\n\
        y 7\n\
        h_bucket{route=\"/docs/{*file}\",le=\"0.1\"} 2\n";

    #[test]
    fn samples_are_summed_matched_exactly_and_their_labels_listed() {
        assert_eq!(sample(TEXT, "x_total", &[]), 4.0);
        assert_eq!(sample(TEXT, "x_total", &[("status", "201")]), 3.0);
        assert_eq!(sample(TEXT, "x_total", &[("route", "/a,\"b\"")]), 1.0, "commas and quotes inside a value");
        assert_eq!(sample(TEXT, "missing", &[]), 0.0);
        assert_eq!(series(TEXT, "y", &[]), Some(7.0));
        assert_eq!(series(TEXT, "x_total", &[("status", "201")]), None, "all the labels, no fewer");
        let routes = label_values(TEXT, "h", "route");
        assert_eq!(routes.into_iter().collect::<Vec<_>>(), ["/docs/{*file}"]);
    }
}
