//! `oasis-installer apply-config`, at every boot of an installed slot (before the network
//! and SSH start): the system image is the same on every box and read-only, so this box's
//! own settings come from the answers kept on the data partition: host name, time zone,
//! the network (a static address as a systemd-networkd file in `/run`), and SSH (the host
//! key made once and kept on the data partition).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::answers::{self, Answers, NetworkMode};

/// The systemd-networkd file for a static address, or `None` for DHCP (the image's
/// default file).
pub fn network_file(a: &Answers) -> Option<String> {
    if a.network_mode != NetworkMode::Static {
        return None;
    }
    let mut s = format!(
        "[Match]\nName={}\n\n[Network]\nAddress={}\n",
        a.interface.as_deref().unwrap_or("en* eth*"),
        a.address.as_deref().unwrap_or_default()
    );
    if let Some(g) = &a.gateway {
        s.push_str(&format!("Gateway={g}\n"));
    }
    for d in &a.dns {
        s.push_str(&format!("DNS={d}\n"));
    }
    Some(s)
}

/// Applies the answers in `data_dir/system/answers.toml` to the running system; `root`
/// is `/` (a folder in tests).
pub fn apply(data_dir: &Path, root: &Path) -> Result<Vec<String>> {
    let path = data_dir.join("system/answers.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let a = answers::check(&text).map_err(|p| {
        let list: Vec<String> = p.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}: {}", path.display(), list.join("; "))
    })?;
    let mut done = Vec::new();
    std::fs::write(root.join("etc/hostname"), format!("{}\n", a.hostname))?;
    if root == Path::new("/") {
        rustix::system::sethostname(a.hostname.as_bytes())
            .with_context(|| format!("cannot set the host name to {}", a.hostname))?;
    }
    done.push(format!("host name {}", a.hostname));
    let zone = Path::new("/usr/share/zoneinfo").join(&a.timezone);
    let localtime = root.join("etc/localtime");
    let _ = std::fs::remove_file(&localtime);
    std::os::unix::fs::symlink(&zone, &localtime)?;
    std::fs::write(root.join("etc/timezone"), format!("{}\n", a.timezone))?;
    done.push(format!("time zone {}", a.timezone));
    let net_dir = root.join("run/systemd/network");
    match network_file(&a) {
        Some(f) => {
            std::fs::create_dir_all(&net_dir)?;
            std::fs::write(net_dir.join("10-oasis.network"), f)?;
            done.push(format!(
                "static address {}",
                a.address.as_deref().unwrap_or_default()
            ));
        }
        None => done.push("DHCP".into()),
    }
    let ssh = data_dir.join("system/ssh");
    std::fs::create_dir_all(&ssh)?;
    let key = ssh.join("ssh_host_ed25519_key");
    if !key.exists() && root == Path::new("/") {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &a.hostname, "-f"])
            .arg(&key)
            .output()
            .context("cannot run ssh-keygen")?;
        if !out.status.success() {
            bail!(
                "ssh-keygen failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        done.push("new SSH host key".into());
    }
    done.push(format!("{} SSH key(s) for root", a.ssh_keys.len()));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_become_files() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        let root = t.path().join("root");
        std::fs::create_dir_all(data.join("system")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            data.join("system/answers.toml"),
            "[system]\nhostname = \"box-7\"\n[network]\nmode = \"static\"\ninterface = \"enp1s0\"\naddress = \"10.1.2.3/24\"\ngateway = \"10.1.2.1\"\ndns = [\"10.1.2.1\", \"9.9.9.9\"]\n",
        )
        .unwrap();
        let done = apply(&data, &root).unwrap();
        assert!(done.iter().any(|d| d == "host name box-7"), "{done:?}");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "box-7\n"
        );
        let net =
            std::fs::read_to_string(root.join("run/systemd/network/10-oasis.network")).unwrap();
        assert_eq!(
            net,
            "[Match]\nName=enp1s0\n\n[Network]\nAddress=10.1.2.3/24\nGateway=10.1.2.1\nDNS=10.1.2.1\nDNS=9.9.9.9\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        // A damaged answers file on the data partition stops here, with its problems.
        std::fs::write(data.join("system/answers.toml"), "[system]\nhostname = 5\n").unwrap();
        let e = apply(&data, &root).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
