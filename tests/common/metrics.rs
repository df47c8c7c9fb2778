//! Reading Prometheus's text format as the gateway's admin listener serves it: samples with
//! their labels, and sums over the series that carry given labels.

/// One scraped sample: name, labels, value.
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses Prometheus's text format (the subset the `prometheus` crate writes).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a numeric sample value"),
            }
        })
        .collect()
}

/// The sum of every series of `name` carrying all of `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Scrapes the admin listener on `admin_port` (loopback, no token) and parses its samples.
pub async fn scrape(admin_port: u16) -> Vec<Sample> {
    let text = reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .await
        .expect("the admin listener answers /metrics")
        .text()
        .await
        .expect("the metrics text");
    parse_metrics(&text)
}
