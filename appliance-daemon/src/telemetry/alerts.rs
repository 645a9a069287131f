//! Health rules over the telemetry, and the alerts they raise.
//!
//! Each rule looks at one subject (a GPU, a mount, the host) and either holds or not; an
//! alert fires when its rule starts holding and resolves when it stops (XID errors, which
//! are events, resolve after `xid_hold_samples` samples without a new one). Alerts carry the
//! recommended action from NVIDIA's XID catalog where one applies, persist in sled, and
//! every change is handed to the webhook sender.

use std::collections::{BTreeMap, HashMap};

use super::Snapshot;
use super::types::GpuEvent;
pub use oasis_api::telemetry::Alert;

/// Thresholds; a firmware profile can override them.
#[derive(Debug, Clone)]
pub struct AlertRules {
    pub gpu_temp_c: f64,
    pub mem_temp_c: f64,
    /// Samples in a row with power or thermal throttling before it alerts.
    pub throttle_samples: u32,
    /// Free space below this fraction of a disk.
    pub disk_free_ratio: f64,
    /// Available memory below this fraction of the host's.
    pub mem_available_ratio: f64,
    pub critical_xids: Vec<u64>,
    /// Samples without a new XID before its alert resolves.
    pub xid_hold_samples: u64,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            gpu_temp_c: 85.0,
            mem_temp_c: 95.0,
            throttle_samples: 30,
            disk_free_ratio: 0.05,
            mem_available_ratio: 0.05,
            critical_xids: vec![48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120],
            xid_hold_samples: 300,
        }
    }
}

/// NVIDIA's recommended action for an XID (from its XID catalog), when there is one.
pub fn xid_action(xid: u64) -> Option<&'static str> {
    Some(match xid {
        13 | 31 | 43 | 45 => "Application error: check the application; the GPU itself is healthy.",
        48 => {
            "Double-bit ECC error: drain the GPU and reset it (nvidia-smi -r); if it recurs, RMA."
        }
        61 | 62 => "Internal micro-controller halt: reset the GPU; if it recurs, contact support.",
        63 => "Row remapping pending: reset the GPU when convenient to apply it.",
        64 => "Row remapping failed: reset the GPU; if it recurs, the GPU needs RMA.",
        74 => {
            "NVLink error: check the NVLink/NVSwitch connections and fabric manager, then reset the GPUs."
        }
        79 => {
            "GPU has fallen off the bus: drain the node and power-cycle it; check PCIe seating, power and cooling; RMA if it recurs."
        }
        92 => {
            "High single-bit ECC error rate: watch it; schedule a reset, and RMA if it keeps rising."
        }
        94 => "Contained ECC error: restart the affected application; the GPU keeps working.",
        95 => {
            "Uncontained ECC error: drain and reset the GPU; every application on it is affected."
        }
        119 | 120 => {
            "GSP firmware error or timeout: reset the GPU; update the driver if it recurs."
        }
        _ => return None,
    })
}

/// A condition that holds now.
struct Holding {
    rule: &'static str,
    subject: String,
    severity: &'static str,
    message: String,
    action: Option<String>,
}

/// The rules' state between samples.
#[derive(Debug, Default)]
pub struct AlertEngine {
    pub rules: AlertRules,
    alerts: BTreeMap<String, Alert>,
    throttled: HashMap<u32, u32>,
    /// Last sample number each (gpu, xid) was seen.
    xids: HashMap<(u32, u64), u64>,
    samples: u64,
}

impl AlertEngine {
    pub fn new(rules: AlertRules, restored: Vec<Alert>) -> AlertEngine {
        AlertEngine {
            rules,
            alerts: restored.into_iter().map(|a| (a.key.clone(), a)).collect(),
            ..AlertEngine::default()
        }
    }

    /// Every alert known, firing first, most recent first.
    pub fn list(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.alerts.values().cloned().collect();
        v.sort_by(|a, b| {
            (a.state != "firing", std::cmp::Reverse(a.last_seen_ms))
                .cmp(&(b.state != "firing", std::cmp::Reverse(b.last_seen_ms)))
        });
        v
    }

    /// Holds the notifications of alert `key` until `until_ms` (by `by`), or releases them
    /// (`None`); the changed alert, or `None` for an unknown key.
    pub fn silence(
        &mut self,
        key: &str,
        until_ms: Option<u64>,
        by: Option<String>,
    ) -> Option<Alert> {
        let a = self.alerts.get_mut(key)?;
        a.silenced_until_ms = until_ms;
        a.silenced_by = until_ms.and(by);
        Some(a.clone())
    }

    /// Evaluates the rules on a sample and the events that came with it; returns the
    /// alerts that changed (fired or resolved).
    pub fn evaluate(&mut self, snap: &Snapshot, events: &[GpuEvent]) -> Vec<Alert> {
        self.samples += 1;
        let now = snap.ts_ms;
        let r = &self.rules;
        let mut holding: Vec<Holding> = Vec::new();
        for g in &snap.gpus {
            let subject = format!("gpu{}", g.index);
            if let Some(e) = &g.error {
                holding.push(Holding {
                    rule: "gpu_missing",
                    subject: subject.clone(),
                    severity: "critical",
                    message: format!("GPU {} does not answer: {e}", g.index),
                    action: xid_action(79).map(str::to_string),
                });
                continue;
            }
            if let Some(t) = g.temp_gpu_c.filter(|t| *t > r.gpu_temp_c) {
                holding.push(Holding {
                    rule: "gpu_temperature",
                    subject: subject.clone(),
                    severity: "warning",
                    message: format!("GPU {} at {t:.0} C (limit {:.0} C)", g.index, r.gpu_temp_c),
                    action: Some(
                        "Check the airflow and fans of the chassis and the room temperature."
                            .into(),
                    ),
                });
            }
            if let Some(t) = g.temp_mem_c.filter(|t| *t > r.mem_temp_c) {
                holding.push(Holding {
                    rule: "memory_temperature",
                    subject: subject.clone(),
                    severity: "warning",
                    message: format!(
                        "GPU {} memory at {t:.0} C (limit {:.0} C)",
                        g.index, r.mem_temp_c
                    ),
                    action: Some("Check the airflow and fans of the chassis.".into()),
                });
            }
            if g.ecc_uncorrected_volatile.is_some_and(|n| n > 0) {
                holding.push(Holding {
                    rule: "ecc_uncorrectable",
                    subject: subject.clone(),
                    severity: "critical",
                    message: format!(
                        "GPU {}: uncorrectable ECC errors since the driver loaded",
                        g.index
                    ),
                    action: xid_action(48).map(str::to_string),
                });
            }
            if g.remap_failure == Some(true) {
                holding.push(Holding {
                    rule: "row_remap_failure",
                    subject: subject.clone(),
                    severity: "critical",
                    message: format!("GPU {}: row remapping failed", g.index),
                    action: xid_action(64).map(str::to_string),
                });
            }
            let throttling = g.throttle_reasons.iter().any(|t| {
                matches!(
                    t.as_str(),
                    "sw_power_cap"
                        | "hw_slowdown"
                        | "sw_thermal_slowdown"
                        | "hw_thermal_slowdown"
                        | "hw_power_brake_slowdown"
                )
            });
            let n = self.throttled.entry(g.index).or_default();
            *n = if throttling { *n + 1 } else { 0 };
            if *n >= r.throttle_samples {
                holding.push(Holding {
                    rule: "throttling",
                    subject: subject.clone(),
                    severity: "warning",
                    message: format!(
                        "GPU {} throttled ({}) for {} samples",
                        g.index,
                        g.throttle_reasons.join(", "),
                        n
                    ),
                    action: Some(
                        "Sustained power or thermal throttling: check cooling and the power limit."
                            .into(),
                    ),
                });
            }
        }
        for e in events {
            if let Some(x) = e.xid {
                self.xids.insert((e.gpu, x), self.samples);
            }
        }
        for (&(gpu, xid), &seen) in &self.xids {
            if self.samples - seen < r.xid_hold_samples {
                let critical = r.critical_xids.contains(&xid);
                holding.push(Holding {
                    rule: if critical { "xid_critical" } else { "xid" },
                    subject: format!("gpu{gpu}:xid{xid}"),
                    severity: if critical { "critical" } else { "warning" },
                    message: format!("GPU {gpu} reported XID {xid}"),
                    action: xid_action(xid).map(str::to_string),
                });
            }
        }
        let h = &snap.host;
        for d in &h.disks {
            if d.total_bytes > 0
                && (d.available_bytes as f64) < r.disk_free_ratio * d.total_bytes as f64
            {
                holding.push(Holding {
                    rule: "disk_full",
                    subject: d.mount.clone(),
                    severity: "warning",
                    message: format!(
                        "{} has {} MiB free of {} MiB",
                        d.mount,
                        d.available_bytes >> 20,
                        d.total_bytes >> 20
                    ),
                    action: Some("Free space: old model files, logs.".into()),
                });
            }
        }
        if h.mem_total_bytes > 0
            && (h.mem_available_bytes as f64) < r.mem_available_ratio * h.mem_total_bytes as f64
        {
            holding.push(Holding {
                rule: "memory_pressure",
                subject: "host".into(),
                severity: "warning",
                message: format!(
                    "{} MiB of host memory available",
                    h.mem_available_bytes >> 20
                ),
                action: Some("Serve fewer or smaller models, or lower kv_cache_bytes.".into()),
            });
        }
        self.apply(now, holding)
    }

    fn apply(&mut self, now: u64, holding: Vec<Holding>) -> Vec<Alert> {
        let mut changed = Vec::new();
        let mut live: Vec<String> = Vec::with_capacity(holding.len());
        for h in holding {
            let key = format!("{}:{}", h.rule, h.subject);
            live.push(key.clone());
            match self.alerts.get_mut(&key) {
                Some(a) if a.state == "firing" => {
                    a.last_seen_ms = now;
                    a.message = h.message;
                }
                existing => {
                    let existing = existing.map(|a| &*a);
                    let fired = existing.map_or(0, |a| a.fired) + 1;
                    let (silenced_until_ms, silenced_by) = existing
                        .filter(|a| a.is_silenced(now))
                        .map_or((None, None), |a| {
                            (a.silenced_until_ms, a.silenced_by.clone())
                        });
                    let a = Alert {
                        key: key.clone(),
                        rule: h.rule.to_string(),
                        subject: h.subject,
                        severity: h.severity.to_string(),
                        state: "firing".into(),
                        message: h.message,
                        action: h.action,
                        first_seen_ms: now,
                        last_seen_ms: now,
                        resolved_ms: None,
                        fired,
                        silenced_until_ms,
                        silenced_by,
                    };
                    changed.push(a.clone());
                    self.alerts.insert(key, a);
                }
            }
        }
        for a in self.alerts.values_mut() {
            if a.state == "firing" && !live.contains(&a.key) {
                a.state = "resolved".into();
                a.resolved_ms = Some(now);
                changed.push(a.clone());
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::types::GpuSample;

    fn snap(ts: u64, temp: f64) -> Snapshot {
        Snapshot {
            ts_ms: ts,
            host: Default::default(),
            gpus: vec![GpuSample {
                index: 0,
                temp_gpu_c: Some(temp),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn an_alert_fires_once_and_resolves() {
        let mut e = AlertEngine::new(AlertRules::default(), Vec::new());
        assert!(e.evaluate(&snap(1, 70.0), &[]).is_empty());
        let fired = e.evaluate(&snap(2, 90.0), &[]);
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].key.as_str(), fired[0].state.as_str()),
            ("gpu_temperature:gpu0", "firing")
        );
        assert!(
            e.evaluate(&snap(3, 91.0), &[]).is_empty(),
            "still firing: no change"
        );
        let resolved = e.evaluate(&snap(4, 60.0), &[]);
        assert_eq!(resolved[0].state, "resolved");
        assert_eq!(resolved[0].resolved_ms, Some(4));
        assert_eq!(e.list()[0].last_seen_ms, 3);
    }

    #[test]
    fn an_xid_fires_with_its_action_and_resolves_after_the_hold() {
        let rules = AlertRules {
            xid_hold_samples: 2,
            ..AlertRules::default()
        };
        let mut e = AlertEngine::new(rules, Vec::new());
        let ev = GpuEvent {
            ts_ms: 1,
            gpu: 0,
            kind: "xid".into(),
            xid: Some(79),
        };
        let fired = e.evaluate(&snap(1, 50.0), &[ev]);
        assert_eq!(fired[0].rule, "xid_critical");
        assert!(
            fired[0]
                .action
                .as_deref()
                .unwrap()
                .contains("fallen off the bus")
        );
        assert!(e.evaluate(&snap(2, 50.0), &[]).is_empty());
        assert_eq!(e.evaluate(&snap(3, 50.0), &[])[0].state, "resolved");
    }

    #[test]
    fn a_silence_outlives_resolving_and_firing_again_until_it_ends() {
        let mut e = AlertEngine::new(AlertRules::default(), Vec::new());
        e.evaluate(&snap(1, 90.0), &[]);
        assert!(e.silence("nothing:gpu0", Some(100), None).is_none());
        let a = e
            .silence("gpu_temperature:gpu0", Some(100), Some("ops".into()))
            .unwrap();
        assert!(a.is_silenced(2) && !a.is_silenced(100));
        e.evaluate(&snap(3, 60.0), &[]);
        let again = e.evaluate(&snap(4, 95.0), &[]);
        assert_eq!((again[0].fired, again[0].is_silenced(4)), (2, true));
        assert_eq!(again[0].silenced_by.as_deref(), Some("ops"));
        // Past its end, the next firing is a plain one.
        e.evaluate(&snap(150, 60.0), &[]);
        let later = e.evaluate(&snap(160, 95.0), &[]);
        assert_eq!((later[0].fired, later[0].silenced_until_ms), (3, None));
        // Lifted by hand.
        e.silence("gpu_temperature:gpu0", Some(1000), Some("ops".into()));
        let lifted = e.silence("gpu_temperature:gpu0", None, None).unwrap();
        assert!(!lifted.is_silenced(170) && lifted.silenced_by.is_none());
    }
}
