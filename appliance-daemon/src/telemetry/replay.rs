//! Plays a recorded trace (JSON lines of [`TraceLine`]) through the same path as NVML:
//! each `sample()` returns the next recorded sample, `events()` the events recorded up to
//! it. At the end it starts again (demos) with timestamps moved on.

use std::path::Path;

use super::types::{DriverInfo, GpuEvent, GpuSample, GpuSource, TraceLine};

#[derive(Debug)]
pub struct ReplaySource {
    info: DriverInfo,
    /// Samples in order, each with the events recorded since the previous one.
    steps: Vec<(Vec<GpuSample>, Vec<GpuEvent>)>,
    next: usize,
    pending: Vec<GpuEvent>,
}

impl ReplaySource {
    /// Reads and checks a trace; errors name the line.
    pub fn open(path: &Path) -> Result<ReplaySource, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read telemetry trace {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("telemetry trace {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ReplaySource, String> {
        let mut info = DriverInfo::default();
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: TraceLine =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            match parsed {
                TraceLine::Info { info: d } => info = d,
                TraceLine::Sample { gpus, .. } => steps.push((gpus, std::mem::take(&mut events))),
                TraceLine::Event { event } => events.push(event),
            }
        }
        if steps.is_empty() {
            return Err("no `sample` lines".into());
        }
        if info.gpu_count == 0 {
            info.gpu_count = steps[0].0.len() as u32;
        }
        Ok(ReplaySource {
            info,
            steps,
            next: 0,
            pending: Vec::new(),
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl GpuSource for ReplaySource {
    fn info(&self) -> DriverInfo {
        self.info.clone()
    }

    fn sample(&mut self) -> Vec<GpuSample> {
        let (gpus, events) = &self.steps[self.next % self.steps.len()];
        // Events are stamped with the time they are replayed.
        let now = now_ms();
        self.pending.extend(events.iter().map(|e| GpuEvent {
            ts_ms: now,
            ..e.clone()
        }));
        self.next += 1;
        gpus.clone()
    }

    fn events(&mut self) -> Vec<GpuEvent> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_replays_samples_and_their_events_then_loops() {
        let trace = r#"{"type":"info","info":{"driver_version":"550.54","gpu_count":1}}
{"type":"sample","ts_ms":1000,"gpus":[{"index":0,"uuid":"GPU-a","temp_gpu_c":40.0}]}
{"type":"event","event":{"ts_ms":1500,"gpu":0,"kind":"xid","xid":79}}
{"type":"sample","ts_ms":2000,"gpus":[{"index":0,"uuid":"GPU-a","temp_gpu_c":41.0}]}
"#;
        let mut r = ReplaySource::parse(trace).unwrap();
        assert_eq!(r.info().driver_version.as_deref(), Some("550.54"));
        assert_eq!(r.sample()[0].temp_gpu_c, Some(40.0));
        assert!(r.events().is_empty());
        assert_eq!(r.sample()[0].temp_gpu_c, Some(41.0));
        assert_eq!(r.events()[0].xid, Some(79));
        assert_eq!(r.sample()[0].temp_gpu_c, Some(40.0));
        assert!(
            ReplaySource::parse("{\"type\":\"sample\",\"gpus\":[{\"bogus\":1}]}")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(ReplaySource::parse("").is_err());
    }
}
