//! Host metrics through `sysinfo`: CPU (total and per core), load, memory, swap, disks,
//! network, temperatures, uptime.

pub use oasis_api::telemetry::{DiskSample, HostSample, NetSample, TempSample};
use sysinfo::{Components, Disks, Networks, System};

/// Reads the host; keeps `sysinfo`'s state between samples (CPU usage is a difference).
pub struct HostSource {
    sys: System,
    disks: Disks,
    networks: Networks,
    components: Components,
}

impl std::fmt::Debug for HostSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSource").finish_non_exhaustive()
    }
}

impl Default for HostSource {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSource {
    pub fn new() -> HostSource {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        HostSource {
            sys,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
        }
    }

    pub fn sample(&mut self) -> HostSample {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);
        let load = System::load_average();
        let mut disks: Vec<DiskSample> = self
            .disks
            .iter()
            .map(|d| DiskSample {
                mount: d.mount_point().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);
        let mut networks: Vec<NetSample> = self
            .networks
            .iter()
            .map(|(name, n)| NetSample {
                name: name.clone(),
                rx_bytes: n.total_received(),
                tx_bytes: n.total_transmitted(),
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let temperatures = self
            .components
            .iter()
            .filter_map(|c| {
                c.temperature()
                    .filter(|t| t.is_finite())
                    .map(|t| TempSample {
                        label: c.label().to_string(),
                        celsius: f64::from(t),
                    })
            })
            .collect();
        HostSample {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_default(),
            cpu_count: self.sys.cpus().len(),
            cpu_pct: f64::from(self.sys.global_cpu_usage()),
            cpu_per_core_pct: self
                .sys
                .cpus()
                .iter()
                .map(|c| f64::from(c.cpu_usage()))
                .collect(),
            load_1m: load.one,
            load_5m: load.five,
            load_15m: load.fifteen,
            mem_total_bytes: self.sys.total_memory(),
            mem_used_bytes: self.sys.used_memory(),
            mem_available_bytes: self.sys.available_memory(),
            swap_total_bytes: self.sys.total_swap(),
            swap_used_bytes: self.sys.used_swap(),
            disks,
            networks,
            temperatures,
            uptime_s: System::uptime(),
        }
    }
}

/// The addresses of this host's network interfaces (loopback included), sorted, each once.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let nets = Networks::new_with_refreshed_list();
    let mut out: Vec<std::net::IpAddr> = nets
        .values()
        .flat_map(|n| n.ip_networks().iter().map(|ip| ip.addr))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_read() {
        let mut h = HostSource::new();
        let s = h.sample();
        assert!(s.cpu_count >= 1);
        assert_eq!(s.cpu_per_core_pct.len(), s.cpu_count);
        assert!(s.mem_total_bytes > 0 && s.mem_used_bytes <= s.mem_total_bytes);
        assert!(s.uptime_s > 0);
        assert!(!s.disks.is_empty());
    }
}
