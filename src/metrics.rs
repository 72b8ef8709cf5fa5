//! The node's metrics in the Prometheus text exposition format (version 0.0.4). Pure: the
//! node (one thread) owns one [`NodeMetrics`], counts into it, sets its gauges before a
//! scrape, and serves [`NodeMetrics::render`]. Every name starts with `codex_`.
//!
//! Amounts of tokens are exposed as floating-point numbers, as the format requires: above
//! 2^53 they lose precision there (`codex status --json` keeps the exact decimal strings).
use crate::sales::sale::FinalState;
use std::fmt::Write;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A monotonic counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter(u64);

impl Counter {
    /// Adds one.
    pub fn inc(&mut self) {
        self.0 = self.0.saturating_add(1);
    }
    /// Adds `n`.
    pub fn add(&mut self, n: u64) {
        self.0 = self.0.saturating_add(n);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }
    /// Records one value.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// JSON-RPC latency buckets, seconds.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Every metric the node exposes. Counters are counted as things happen; the gauges are
/// set by the node from its state before each scrape.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Chain connections lost (and re-made).
    pub reconnects: Counter,
    /// Chain reorganisations noticed (a head replaced a block seen before).
    pub reorgs: Counter,
    /// Marketplace events decoded and handed to the engine.
    pub events_processed: Counter,
    /// submitProof transactions that went through.
    pub proofs_submitted: Counter,
    /// Proofs that failed: simulated failures and proofs that could not be computed.
    pub proofs_failed: Counter,
    /// submitProof transactions that did not go through.
    pub proofs_missed: Counter,
    /// Proofs the validator marked missing (mined marks).
    pub validator_marks: Counter,
    /// Gauge: slots the validator watches.
    pub validator_slots: u64,
    /// JSON-RPC round trips, seconds.
    pub rpc_latency: Histogram,
    /// Sales ended, by final state (`sales_ended[state as usize]`).
    pub sales_ended: [u64; FinalState::COUNT],
    /// Tokens received as payouts (base units).
    pub tokens_earned: f64,
    /// REST answers by status class: 1xx..5xx.
    pub api_responses: [u64; 5],
    /// Gauges: queue length and capacity.
    pub queue_length: u64,
    /// Queue capacity.
    pub queue_capacity: u64,
    /// Workers busy.
    pub workers_busy: u64,
    /// Workers in all.
    pub workers_total: u64,
    /// Live sales by state.
    pub sales_by_state: Vec<(&'static str, u64)>,
    /// Transactions sent, reverted and replaced (the transaction book's counts).
    pub tx_sent: u64,
    /// Transactions reverted.
    pub tx_reverted: u64,
    /// Transactions replaced with higher fees.
    pub tx_replaced: u64,
    /// The chain head.
    pub head: u64,
    /// Blocks between the head and the last block fully processed.
    pub blocks_behind: u64,
    /// Bytes offered, free and reserved across the availabilities.
    pub bytes_offered: u64,
    /// Bytes free.
    pub bytes_free: u64,
    /// Bytes reserved.
    pub bytes_reserved: u64,
    /// Collateral held by live reservations (base units).
    pub collateral_held: f64,
}

impl NodeMetrics {
    /// Metrics of a node with this queue capacity and worker budget.
    pub fn new(queue_capacity: usize, workers: usize) -> NodeMetrics {
        NodeMetrics {
            reconnects: Counter::default(),
            reorgs: Counter::default(),
            events_processed: Counter::default(),
            proofs_submitted: Counter::default(),
            proofs_failed: Counter::default(),
            proofs_missed: Counter::default(),
            validator_marks: Counter::default(),
            validator_slots: 0,
            rpc_latency: Histogram::new(LATENCY),
            sales_ended: [0; FinalState::COUNT],
            tokens_earned: 0.0,
            api_responses: [0; 5],
            queue_length: 0,
            queue_capacity: queue_capacity as u64,
            workers_busy: 0,
            workers_total: workers as u64,
            sales_by_state: Vec::new(),
            tx_sent: 0,
            tx_reverted: 0,
            tx_replaced: 0,
            head: 0,
            blocks_behind: 0,
            bytes_offered: 0,
            bytes_free: 0,
            bytes_reserved: 0,
            collateral_held: 0.0,
        }
    }

    /// Counts one REST answer by its status class.
    pub fn count_response(&mut self, status: u16) {
        if let Some(n) = self
            .api_responses
            .get_mut(usize::from(status / 100).wrapping_sub(1))
        {
            *n += 1;
        }
    }

    /// Counts a sale that ended in `state`.
    pub fn sale_ended(&mut self, state: FinalState) {
        self.sales_ended[state as usize] += 1;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut e = Encoder(String::new());
        let c = |e: &mut Encoder, name, help, v: u64| e.single(name, help, "counter", v as f64);
        let g = |e: &mut Encoder, name, help, v: f64| e.single(name, help, "gauge", v);
        e.family("codex_build_info", "codex's version", "gauge");
        e.sample(
            "codex_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        g(
            &mut e,
            "codex_queue_length",
            "Slots waiting in the queue",
            self.queue_length as f64,
        );
        g(
            &mut e,
            "codex_queue_capacity",
            "Most slots the queue holds",
            self.queue_capacity as f64,
        );
        g(
            &mut e,
            "codex_workers_busy",
            "Workers preparing a slot",
            self.workers_busy as f64,
        );
        g(
            &mut e,
            "codex_workers",
            "The worker budget",
            self.workers_total as f64,
        );
        e.family("codex_sales", "Live sales by state", "gauge");
        for (state, n) in &self.sales_by_state {
            e.sample("codex_sales", &[("state", state)], *n as f64);
        }
        e.family(
            "codex_sales_ended_total",
            "Sales ended, by outcome",
            "counter",
        );
        for state in FinalState::ALL {
            e.sample(
                "codex_sales_ended_total",
                &[("outcome", state.outcome())],
                self.sales_ended[state as usize] as f64,
            );
        }
        c(
            &mut e,
            "codex_transactions_sent_total",
            "Transactions sent",
            self.tx_sent,
        );
        c(
            &mut e,
            "codex_transactions_reverted_total",
            "Transactions reverted",
            self.tx_reverted,
        );
        c(
            &mut e,
            "codex_transactions_replaced_total",
            "Transactions replaced with higher fees",
            self.tx_replaced,
        );
        c(
            &mut e,
            "codex_proofs_submitted_total",
            "Proofs submitted and mined",
            self.proofs_submitted.get(),
        );
        c(
            &mut e,
            "codex_proofs_failed_total",
            "Proofs that failed (simulated or not computed)",
            self.proofs_failed.get(),
        );
        c(
            &mut e,
            "codex_proofs_missed_total",
            "Proof transactions that did not go through",
            self.proofs_missed.get(),
        );
        c(
            &mut e,
            "codex_validator_marks_total",
            "Proofs the validator marked missing",
            self.validator_marks.get(),
        );
        g(
            &mut e,
            "codex_validator_slots",
            "Slots the validator watches",
            self.validator_slots as f64,
        );
        e.family(
            "codex_rpc_latency_seconds",
            "JSON-RPC round trips",
            "histogram",
        );
        let h = &self.rpc_latency;
        let mut cum = 0;
        for (b, n) in h.bounds.iter().zip(&h.counts) {
            cum += n;
            e.sample(
                "codex_rpc_latency_seconds_bucket",
                &[("le", &fmt_f64(*b))],
                cum as f64,
            );
        }
        e.sample(
            "codex_rpc_latency_seconds_bucket",
            &[("le", "+Inf")],
            h.count as f64,
        );
        e.sample("codex_rpc_latency_seconds_sum", &[], h.sum);
        e.sample("codex_rpc_latency_seconds_count", &[], h.count as f64);
        c(
            &mut e,
            "codex_chain_reconnects_total",
            "Chain connections lost and made again",
            self.reconnects.get(),
        );
        c(
            &mut e,
            "codex_chain_reorgs_total",
            "Chain reorganisations noticed (a head replacing a block seen before)",
            self.reorgs.get(),
        );
        c(
            &mut e,
            "codex_events_processed_total",
            "Marketplace events processed",
            self.events_processed.get(),
        );
        g(
            &mut e,
            "codex_chain_head",
            "The chain's latest block",
            self.head as f64,
        );
        g(
            &mut e,
            "codex_blocks_behind",
            "Blocks between the head and the last block processed",
            self.blocks_behind as f64,
        );
        g(
            &mut e,
            "codex_bytes_offered",
            "Bytes offered by the availabilities",
            self.bytes_offered as f64,
        );
        g(
            &mut e,
            "codex_bytes_free",
            "Bytes still free",
            self.bytes_free as f64,
        );
        g(
            &mut e,
            "codex_bytes_reserved",
            "Bytes held by reservations",
            self.bytes_reserved as f64,
        );
        g(
            &mut e,
            "codex_collateral_held",
            "Collateral held by live reservations, token base units",
            self.collateral_held,
        );
        e.single(
            "codex_tokens_earned_total",
            "Tokens received as payouts, base units",
            "counter",
            self.tokens_earned,
        );
        e.family(
            "codex_api_responses_total",
            "REST answers by status class",
            "counter",
        );
        for (i, n) in self.api_responses.iter().enumerate() {
            e.sample(
                "codex_api_responses_total",
                &[("code", &format!("{}xx", i + 1))],
                *n as f64,
            );
        }
        e.0
    }
}

/// Prometheus formats numbers as Go does: integers without a fraction, `+Inf`, `NaN`.
fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

struct Encoder(String);

impl Encoder {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let val = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{val}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", fmt_f64(v));
    }
    fn single(&mut self, name: &str, help: &str, kind: &str, v: f64) {
        self.family(name, help, kind);
        self.sample(name, &[], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strict reading of the format: HELP and TYPE once per family before its samples,
    /// valid names, cumulative buckets ending in `+Inf` = `_count`.
    fn check(text: &str) {
        let mut families: Vec<String> = Vec::new();
        let mut last_bucket: Option<f64> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!families.contains(&name), "{name} twice");
                families.push(name);
                last_bucket = None;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(rest.split(' ').next(), families.last().map(String::as_str));
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("codex_"), "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            let fam = families.last().unwrap();
            assert!(
                name.starts_with(fam.as_str()),
                "{name} outside its family {fam}"
            );
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            };
            if name.ends_with("_bucket") {
                assert!(last_bucket.is_none_or(|b| v >= b), "{line}");
                last_bucket = Some(v);
            }
            if name.ends_with("_count") {
                assert_eq!(Some(v), last_bucket, "+Inf bucket = count");
            }
        }
    }

    #[test]
    fn the_exposition_is_well_formed_and_says_what_happened() {
        let mut m = NodeMetrics::new(128, 3);
        for _ in 0..3 {
            m.proofs_submitted.inc();
        }
        m.rpc_latency.observe(0.001);
        m.rpc_latency.observe(2.0);
        m.sale_ended(FinalState::Finished);
        m.sale_ended(FinalState::Finished);
        m.sales_by_state = vec![("SaleProving", 2)];
        m.count_response(201);
        m.count_response(422);
        m.count_response(999);
        let text = m.render();
        check(&text);
        assert!(text.contains("codex_proofs_submitted_total 3\n"), "{text}");
        m.validator_marks.inc();
        m.validator_slots = 7;
        let text = m.render();
        check(&text);
        assert!(text.contains("codex_validator_marks_total 1\n"), "{text}");
        assert!(text.contains("codex_validator_slots 7\n"), "{text}");
        assert!(text.contains("codex_rpc_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("codex_rpc_latency_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("codex_rpc_latency_seconds_bucket{le=\"2\"} 2\n"));
        assert!(text.contains("codex_rpc_latency_seconds_count 2\n"));
        assert!(text.contains("codex_sales_ended_total{outcome=\"Finished\"} 2\n"));
        assert!(text.contains("codex_sales_ended_total{outcome=\"Ignored\"} 0\n"));
        assert!(text.contains("codex_sales{state=\"SaleProving\"} 2\n"));
        assert!(text.contains("codex_queue_capacity 128\n"));
        assert!(text.contains("codex_api_responses_total{code=\"4xx\"} 1\n"));
        let mut e = Encoder(String::new());
        e.family("codex_x", "a \\ b\nc", "gauge");
        e.sample("codex_x", &[("l", "q\"n\nb\\")], f64::NAN);
        assert_eq!(
            e.0,
            "# HELP codex_x a \\\\ b\\nc\n# TYPE codex_x gauge\ncodex_x{l=\"q\\\"n\\nb\\\\\"} NaN\n"
        );
    }
}
