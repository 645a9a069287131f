//! `GET /metrics`: the daemon's and each model engine's counters in Prometheus text
//! format (version 0.0.4), with latency histograms measured where clients feel them: from
//! the request's arrival to its first token (TTFT), between tokens (ITL), and to its end.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// A histogram with fixed bucket bounds (seconds), lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last counts values above every bound.
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < s);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

const TTFT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const ITL_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const E2E_BOUNDS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Latency histograms shared by all requests.
#[derive(Debug)]
pub struct Latencies {
    pub ttft: Histogram,
    pub itl: Histogram,
    pub e2e: Histogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            ttft: Histogram::new(TTFT_BOUNDS),
            itl: Histogram::new(ITL_BOUNDS),
            e2e: Histogram::new(E2E_BOUNDS),
        }
    }
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (model, v) in rows {
        let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", escape(model));
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metrics of the daemon and its engines.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    let models = st.catalog.deployments();
    let per = |f: &dyn Fn(&super::catalog::ServedModel) -> f64| -> Vec<(String, f64)> {
        models.iter().map(|m| (m.name.clone(), f(m))).collect()
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    gauge(
        &mut out,
        "oasis_requests_running",
        "gauge",
        "Sequences in the batch.",
        &per(&|m| m.worker.stats.engine.running.load(Ordering::Relaxed) as f64),
    );
    gauge(
        &mut out,
        "oasis_requests_waiting",
        "gauge",
        "Requests waiting for a place in the batch.",
        &per(&|m| m.worker.stats.waiting() as f64),
    );
    let eng =
        |f: &dyn Fn(&engine::scheduler::SchedulerStats) -> f64| per(&|m| f(&m.worker.stats.engine));
    let u = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as f64;
    gauge(
        &mut out,
        "oasis_kv_blocks",
        "gauge",
        "Blocks in the key/value cache pool.",
        &eng(&|e| u(&e.kv_blocks_total)),
    );
    gauge(
        &mut out,
        "oasis_kv_blocks_used",
        "gauge",
        "Blocks referenced by running sequences.",
        &eng(&|e| u(&e.kv_blocks_used)),
    );
    gauge(
        &mut out,
        "oasis_kv_blocks_cached",
        "gauge",
        "Unreferenced blocks kept for their prompt prefix (evicted least recently used first).",
        &eng(&|e| u(&e.kv_blocks_cached)),
    );
    gauge(
        &mut out,
        "oasis_prefix_cache_hit_ratio",
        "gauge",
        "Prompt blocks found in the prefix cache over prompt blocks looked up.",
        &eng(&|e| {
            let looked = load(&e.prefix_blocks_looked_up);
            if looked > 0.0 {
                load(&e.prefix_blocks_hit) / looked
            } else {
                0.0
            }
        }),
    );
    gauge(
        &mut out,
        "oasis_prefix_cache_hit_blocks_total",
        "counter",
        "Prompt blocks taken from the prefix cache instead of computed.",
        &eng(&|e| load(&e.prefix_blocks_hit)),
    );
    gauge(
        &mut out,
        "oasis_requests_preempted_total",
        "counter",
        "Sequences preempted (blocks freed, recomputed later) when the cache ran out.",
        &eng(&|e| load(&e.preempted_total)),
    );
    gauge(
        &mut out,
        "oasis_requests_finished_total",
        "counter",
        "Sequences finished (stopped or at their length limit).",
        &per(&|m| load(&m.worker.stats.engine.requests_total)),
    );
    gauge(
        &mut out,
        "oasis_requests_cancelled_total",
        "counter",
        "Sequences dropped because their client went away.",
        &per(&|m| load(&m.worker.stats.engine.cancelled_total)),
    );
    gauge(
        &mut out,
        "oasis_prompt_tokens_total",
        "counter",
        "Prompt tokens run through the model.",
        &per(&|m| load(&m.worker.stats.engine.prompt_tokens_total)),
    );
    gauge(
        &mut out,
        "oasis_generation_tokens_total",
        "counter",
        "Tokens generated.",
        &per(&|m| load(&m.worker.stats.engine.completion_tokens_total)),
    );
    gauge(
        &mut out,
        "oasis_engine_steps_total",
        "counter",
        "Forward passes run.",
        &per(&|m| load(&m.worker.stats.engine.steps_total)),
    );
    gauge(
        &mut out,
        "oasis_draft_tokens_total",
        "counter",
        "Prompt-lookup draft tokens verified (speculative decoding).",
        &per(&|m| load(&m.worker.stats.engine.draft_tokens_total)),
    );
    gauge(
        &mut out,
        "oasis_draft_tokens_accepted_total",
        "counter",
        "Draft tokens the model chose itself, kept without a step of their own.",
        &per(&|m| load(&m.worker.stats.engine.draft_accepted_total)),
    );
    let _ = writeln!(
        out,
        "# HELP oasis_moe_expert_tokens_total Tokens routed to each expert of each MoE layer (the load balancer's input).\n# TYPE oasis_moe_expert_tokens_total counter"
    );
    for m in &models {
        let Some(layers) = m.model.expert_tokens() else {
            continue;
        };
        let id = escape(&m.name);
        for (layer, counts) in layers.iter().enumerate() {
            if counts.iter().all(|c| *c == 0) {
                continue; // a dense layer
            }
            for (expert, c) in counts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "oasis_moe_expert_tokens_total{{model=\"{id}\",layer=\"{layer}\",expert=\"{expert}\"}} {c}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP oasis_rank_expert_pairs_total (token, expert) pairs each engine rank computed (expert parallelism).\n# TYPE oasis_rank_expert_pairs_total counter"
    );
    for m in &models {
        if let Some(ep) = &m.worker.ep {
            let id = escape(&m.name);
            for (rank, a) in ep.rank_pairs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "oasis_rank_expert_pairs_total{{model=\"{id}\",rank=\"{rank}\"}} {}",
                    a.load(Ordering::Relaxed)
                );
            }
        }
    }
    let ep_models: Vec<(String, f64)> = models
        .iter()
        .filter_map(|m| {
            m.worker
                .ep
                .as_ref()
                .map(|ep| (m.name.clone(), ep.imbalance()))
        })
        .collect();
    gauge(
        &mut out,
        "oasis_rank_imbalance_ratio",
        "gauge",
        "Max over mean of the expert pairs computed per rank (1 = even).",
        &ep_models,
    );
    telemetry_metrics(&mut out, &st);
    st.latencies.ttft.render(
        &mut out,
        "oasis_time_to_first_token_seconds",
        "From a request's arrival to its first generated token.",
    );
    st.latencies.itl.render(
        &mut out,
        "oasis_inter_token_latency_seconds",
        "Between consecutive tokens of one choice.",
    );
    st.latencies.e2e.render(
        &mut out,
        "oasis_e2e_request_latency_seconds",
        "From a request's arrival to its last token.",
    );
    let _ = writeln!(
        out,
        "# HELP oasis_uptime_seconds Seconds since the daemon started.\n# TYPE oasis_uptime_seconds gauge\noasis_uptime_seconds {}",
        st.started.elapsed().as_secs_f64()
    );
    let audit = st.audit.health();
    let _ = writeln!(
        out,
        "# HELP oasis_audit_write_failures_total Audit log appends that failed.\n# TYPE oasis_audit_write_failures_total counter\noasis_audit_write_failures_total {}\n# HELP oasis_audit_entries_pending Audit entries not yet in the log (admin changes are refused while there are any).\n# TYPE oasis_audit_entries_pending gauge\noasis_audit_entries_pending {}",
        audit.write_failures_total, audit.entries_pending
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// GPU metrics under dcgm-exporter's names and labels (so its Grafana dashboards work),
/// and host metrics.
fn telemetry_metrics(out: &mut String, st: &AppState) {
    let Some(snap) = st.telemetry.latest() else {
        return;
    };
    let status = st.telemetry.status();
    let host = escape(&snap.host.hostname);
    let labels = |g: &crate::telemetry::types::GpuSample| {
        format!(
            "gpu=\"{}\",UUID=\"{}\",pci_bus_id=\"{}\",device=\"nvidia{}\",modelName=\"{}\",Hostname=\"{}\"",
            g.index,
            escape(&g.uuid),
            escape(&g.pci_bus_id),
            g.index,
            escape(&g.name),
            host
        )
    };
    type Field = fn(&crate::telemetry::types::GpuSample) -> Option<f64>;
    let fields: [(&str, &str, &str, Field); 21] = [
        (
            "DCGM_FI_DEV_GPU_UTIL",
            "gauge",
            "GPU utilization (in %).",
            |g| g.gpu_util_pct,
        ),
        (
            "DCGM_FI_DEV_MEM_COPY_UTIL",
            "gauge",
            "Memory utilization (in %).",
            |g| g.mem_util_pct,
        ),
        (
            "DCGM_FI_DEV_FB_USED",
            "gauge",
            "Framebuffer memory used (in MiB).",
            |g| g.mem_used_bytes.map(|b| b as f64 / 1048576.0),
        ),
        (
            "DCGM_FI_DEV_FB_FREE",
            "gauge",
            "Framebuffer memory free (in MiB).",
            |g| g.mem_free_bytes.map(|b| b as f64 / 1048576.0),
        ),
        (
            "DCGM_FI_DEV_GPU_TEMP",
            "gauge",
            "GPU temperature (in C).",
            |g| g.temp_gpu_c,
        ),
        (
            "DCGM_FI_DEV_MEMORY_TEMP",
            "gauge",
            "Memory temperature (in C).",
            |g| g.temp_mem_c,
        ),
        (
            "DCGM_FI_DEV_POWER_USAGE",
            "gauge",
            "Power draw (in W).",
            |g| g.power_w,
        ),
        (
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "counter",
            "Total energy consumption since boot (in mJ).",
            |g| g.energy_mj.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_SM_CLOCK",
            "gauge",
            "SM clock frequency (in MHz).",
            |g| g.sm_clock_mhz.map(f64::from),
        ),
        (
            "DCGM_FI_DEV_MEM_CLOCK",
            "gauge",
            "Memory clock frequency (in MHz).",
            |g| g.mem_clock_mhz.map(f64::from),
        ),
        ("DCGM_FI_DEV_FAN_SPEED", "gauge", "Fan speed (in %).", |g| {
            g.fan_pct.map(f64::from)
        }),
        (
            "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
            "counter",
            "Total number of PCIe retries.",
            |g| g.pcie_replay_count.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
            "counter",
            "Total number of single-bit volatile ECC errors.",
            |g| g.ecc_corrected_volatile.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
            "counter",
            "Total number of double-bit volatile ECC errors.",
            |g| g.ecc_uncorrected_volatile.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
            "counter",
            "Total number of single-bit persistent ECC errors.",
            |g| g.ecc_corrected_aggregate.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
            "counter",
            "Total number of double-bit persistent ECC errors.",
            |g| g.ecc_uncorrected_aggregate.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
            "counter",
            "Number of remapped rows for correctable errors.",
            |g| g.remapped_rows_correctable.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
            "counter",
            "Number of remapped rows for uncorrectable errors.",
            |g| g.remapped_rows_uncorrectable.map(|v| v as f64),
        ),
        (
            "DCGM_FI_DEV_ROW_REMAP_FAILURE",
            "gauge",
            "Whether remapping of rows has failed.",
            |g| g.remap_failure.map(|b| f64::from(u8::from(b))),
        ),
        (
            "DCGM_FI_PROF_SM_ACTIVE",
            "gauge",
            "The ratio of cycles an SM has at least 1 warp assigned (in %).",
            |g| g.sm_active_pct.map(|p| p / 100.0),
        ),
        (
            "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
            "gauge",
            "Ratio of cycles the tensor (HMMA) pipe is active (in %).",
            |g| g.tensor_active_pct.map(|p| p / 100.0),
        ),
    ];
    for (name, kind, help, f) in fields {
        let rows: Vec<String> = snap
            .gpus
            .iter()
            .filter_map(|g| f(g).map(|v| format!("{name}{{{}}} {v}", labels(g))))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in rows {
            let _ = writeln!(out, "{r}");
        }
    }
    // The last XID each GPU reported (dcgm-exporter's DCGM_FI_DEV_XID_ERRORS).
    let last = st.telemetry.last_xids();
    let xids: Vec<String> = snap
        .gpus
        .iter()
        .filter_map(|g| {
            last.get(&g.index)
                .map(|x| format!("DCGM_FI_DEV_XID_ERRORS{{{}}} {x}", labels(g)))
        })
        .collect();
    if !xids.is_empty() {
        let _ = writeln!(
            out,
            "# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.\n# TYPE DCGM_FI_DEV_XID_ERRORS gauge"
        );
        for r in xids {
            let _ = writeln!(out, "{r}");
        }
    }
    let h = &snap.host;
    let _ = writeln!(
        out,
        "# HELP oasis_gpu_available Whether GPU telemetry is available (NVML or a replay).\n# TYPE oasis_gpu_available gauge\noasis_gpu_available {}",
        u8::from(status.available)
    );
    let _ = writeln!(
        out,
        "# HELP oasis_gpus GPUs reported.\n# TYPE oasis_gpus gauge\noasis_gpus {}",
        snap.gpus.len()
    );
    for (name, help, v) in [
        (
            "oasis_host_cpu_utilization_ratio",
            "CPU busy, all cores (0-1).",
            h.cpu_pct / 100.0,
        ),
        ("oasis_host_load1", "1-minute load average.", h.load_1m),
        (
            "oasis_host_memory_total_bytes",
            "Host memory.",
            h.mem_total_bytes as f64,
        ),
        (
            "oasis_host_memory_used_bytes",
            "Host memory in use.",
            h.mem_used_bytes as f64,
        ),
        (
            "oasis_host_swap_used_bytes",
            "Swap in use.",
            h.swap_used_bytes as f64,
        ),
        (
            "oasis_host_uptime_seconds",
            "Host uptime.",
            h.uptime_s as f64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP oasis_host_disk_available_bytes Free space per mount.\n# TYPE oasis_host_disk_available_bytes gauge"
    );
    for d in &h.disks {
        let _ = writeln!(
            out,
            "oasis_host_disk_available_bytes{{mount=\"{}\"}} {}",
            escape(&d.mount),
            d.available_bytes
        );
    }
    let _ = writeln!(
        out,
        "# HELP oasis_telemetry_sample_seconds Mean time one telemetry sample takes.\n# TYPE oasis_telemetry_sample_seconds gauge\noasis_telemetry_sample_seconds {}",
        st.telemetry.mean_sample_us() / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 5.55\nx_count 3\n"), "{out}");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
