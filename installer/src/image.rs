//! Building the system image with Debian's own tools: `mmdebstrap` bootstraps Debian 12
//! with the kernel, systemd, live-boot and systemd-boot; our binaries and units go in
//! through its hooks; `mksquashfs` makes the read-only root; `grub-mkrescue` (xorriso)
//! makes the hybrid ISO that boots from USB or optical media, BIOS or UEFI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::files;

/// What goes into a system image.
#[derive(Debug, Clone)]
pub struct SystemSpec {
    /// The `oasis` binary.
    pub oasis: PathBuf,
    /// The `oasis-installer` binary (this one).
    pub installer: PathBuf,
    /// The built web console (`desktop-ui/dist`), when there is one.
    pub console: Option<PathBuf>,
    /// The firmware profile the image is for: a GPU profile adds NVIDIA's driver.
    pub profile: String,
    /// The update signing key's public half (hex), baked in for `oasis system update`.
    pub update_key: Option<String>,
    pub version: String,
    /// Debian mirror.
    pub mirror: String,
    /// Where downloaded packages are kept between builds.
    pub cache: PathBuf,
    /// NVIDIA's repository signing key (a keyring file), for GPU profiles.
    pub nvidia_keyring: Option<PathBuf>,
}

/// What a build wrote, next to the image (`build.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    pub profile: String,
    pub gpu: bool,
    pub created_unix: u64,
    pub squashfs_bytes: u64,
    pub build_seconds: f64,
}

/// A shell word, quoted.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn need_tool(name: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file()
        || Path::new("/sbin").join(name).is_file();
    if !found {
        bail!(
            "`{name}` is not installed (Debian package {package}; scripts/setup-host installs it)"
        );
    }
    Ok(())
}

/// Whether `profile` needs GPUs (and so NVIDIA's driver in the image).
pub fn profile_needs_gpu(profile: &str) -> Result<bool> {
    let all = firmware_profiles::builtin().map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = firmware_profiles::resolve(profile, &all).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(!p.profile.cpu_only())
}

/// Builds the system image into `out` (`vmlinuz`, `initrd.img`, `filesystem.squashfs`,
/// `build.json`). Needs root (mmdebstrap's root mode); downloads go through `spec.cache`.
pub fn build_system(spec: &SystemSpec, out: &Path) -> Result<BuildInfo> {
    let started = std::time::Instant::now();
    if appliance_host::paths::euid() != Some(0) {
        bail!(
            "building the system image needs root (mmdebstrap installs packages as root); run it with sudo"
        );
    }
    need_tool("mmdebstrap", "mmdebstrap")?;
    need_tool("mksquashfs", "squashfs-tools")?;
    for f in [&spec.oasis, &spec.installer] {
        if !f.is_file() {
            bail!("{} is not a file", f.display());
        }
    }
    let gpu = profile_needs_gpu(&spec.profile)?;
    std::fs::create_dir_all(out)?;
    std::fs::create_dir_all(&spec.cache)?;
    let out = out.canonicalize()?;
    let cache = spec.cache.canonicalize()?;

    // Everything of ours, staged as the image will hold it.
    let stage = tempfile::Builder::new()
        .prefix("oasis-stage-")
        .tempdir()
        .context("cannot make a staging folder")?;
    let s = stage.path();
    let put = |rel: &str, mode: u32, data: &[u8]| -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let p = s.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for (rel, mode, text) in files::FILES {
        put(rel, *mode, text.as_bytes())?;
    }
    put("usr/bin/oasis", 0o755, &std::fs::read(&spec.oasis)?)?;
    put(
        "usr/bin/oasis-installer",
        0o755,
        &std::fs::read(&spec.installer)?,
    )?;
    if let Some(k) = &spec.update_key {
        put(
            "usr/share/oasis/update-key.pub",
            0o644,
            format!("{k}\n").as_bytes(),
        )?;
    }
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    put(
        "usr/share/oasis/system.json",
        0o644,
        serde_json::to_string_pretty(&serde_json::json!({
            "version": spec.version, "profile": spec.profile, "created_unix": created_unix,
        }))?
        .as_bytes(),
    )?;
    if let Some(c) = &spec.console {
        let dst = s.join("usr/share/oasis/console");
        copy_tree(c, &dst).with_context(|| format!("copying the console from {}", c.display()))?;
    }
    std::fs::create_dir_all(s.join("efi"))?;
    std::fs::create_dir_all(s.join("var/lib/oasis"))?;

    let mut packages: Vec<&str> = files::PACKAGES.to_vec();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--format=null"]);
    let mut components = "main".to_string();
    if gpu {
        let Some(keyring) = &spec.nvidia_keyring else {
            bail!(
                "profile `{}` needs NVIDIA's driver: pass --nvidia-keyring with the key of {} (the cuda-keyring package holds it)",
                spec.profile,
                files::NVIDIA_REPO
            );
        };
        components = "main,contrib,non-free,non-free-firmware".into();
        packages.extend(files::GPU_PACKAGES);
        cmd.arg(format!(
            "--setup-hook=mkdir -p \"$1\"/etc/apt/keyrings && cp {} \"$1\"/etc/apt/keyrings/nvidia.gpg",
            sh_quote(&keyring.display().to_string())
        ));
        cmd.arg(format!(
            "--setup-hook=echo 'deb [signed-by=/etc/apt/keyrings/nvidia.gpg] {} /' > \"$1\"/etc/apt/sources.list.d/nvidia.list",
            files::NVIDIA_REPO
        ));
    }
    cmd.arg(format!("--components={components}"));
    cmd.arg(format!("--include={}", packages.join(",")));
    // Leave documentation out of the image.
    for p in ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*"] {
        cmd.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    cmd.arg("--dpkgopt=path-include=/usr/share/doc/*/copyright");
    let c = sh_quote(&cache.display().to_string());
    let st = sh_quote(&s.display().to_string());
    let o = sh_quote(&out.display().to_string());
    cmd.arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/");
    cmd.arg(format!("--setup-hook=sync-in {c} /var/cache/apt/archives/"));
    cmd.args(["--skip=download/empty", "--skip=essential/unlink"]);
    cmd.arg(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {c}"
    ));
    cmd.arg(format!(
        "--customize-hook=tar -C {st} --owner=0 --group=0 -cf - . | tar -C \"$1\" -xf -"
    ));
    cmd.arg(format!(
        "--customize-hook=chroot \"$1\" systemctl enable {}",
        files::ENABLED.join(" ")
    ));
    // No host keys or machine id shared by every box; no package caches in the image.
    cmd.arg("--customize-hook=rm -f \"$1\"/etc/ssh/ssh_host_* && : > \"$1\"/etc/machine-id && rm -rf \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/lib/apt/lists/*");
    cmd.arg(format!(
        "--customize-hook=cp \"$1\"/boot/vmlinuz-* {o}/vmlinuz && cp \"$1\"/boot/initrd.img-* {o}/initrd.img"
    ));
    cmd.arg(format!(
        "--customize-hook=mksquashfs \"$1\" {o}/filesystem.squashfs -noappend -quiet -comp zstd -Xcompression-level 15 -wildcards -e boot 'proc/*' 'sys/*' 'dev/*' 'run/*' 'tmp/*'"
    ));
    cmd.arg("bookworm").arg("/dev/null").arg(&spec.mirror);
    let status = cmd.status().context("cannot run mmdebstrap")?;
    if !status.success() {
        bail!("mmdebstrap failed ({status})");
    }
    let squashfs_bytes = std::fs::metadata(out.join("filesystem.squashfs"))?.len();
    let info = BuildInfo {
        version: spec.version.clone(),
        profile: spec.profile.clone(),
        gpu,
        created_unix,
        squashfs_bytes,
        build_seconds: started.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("build.json"), serde_json::to_string_pretty(&info)?)?;
    Ok(info)
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let t = e.file_type()?;
        let to = dst.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// The ISO's volume label, which the boot menu finds the medium by.
pub const ISO_LABEL: &str = "OASIS";

/// What goes on the ISO besides the system image.
#[derive(Debug, Clone, Default)]
pub struct IsoSpec {
    /// The answers file (checked before it is put on the medium).
    pub answers: Option<PathBuf>,
    /// A model file (GGUF) the installed box serves from its first boot.
    pub model: Option<PathBuf>,
}

/// Makes the hybrid ISO `out` from the system image in `system`.
pub fn build_iso(system: &Path, spec: &IsoSpec, out: &Path) -> Result<()> {
    need_tool(
        "grub-mkrescue",
        "grub-common, grub-pc-bin and grub-efi-amd64-bin",
    )?;
    need_tool("xorriso", "xorriso")?;
    need_tool("mformat", "mtools")?;
    let tree = tempfile::Builder::new()
        .prefix("oasis-iso-")
        .tempdir_in(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .context("cannot make the ISO's folder")?;
    let t = tree.path();
    std::fs::create_dir_all(t.join("live"))?;
    std::fs::create_dir_all(t.join("boot/grub"))?;
    std::fs::create_dir_all(t.join("oasis/models"))?;
    for f in system_image::bundle::FILES {
        let src = system.join(f);
        // A hard link when the ISO is made on the same volume, else a copy.
        if std::fs::hard_link(&src, t.join("live").join(f)).is_err() {
            std::fs::copy(&src, t.join("live").join(f))
                .with_context(|| format!("{} (run build-system first)", src.display()))?;
        }
    }
    if let Ok(b) = std::fs::read(system.join("build.json")) {
        std::fs::write(t.join("oasis/build.json"), b)?;
    }
    if let Some(a) = &spec.answers {
        let text =
            std::fs::read_to_string(a).with_context(|| format!("cannot read {}", a.display()))?;
        if let Err(problems) = crate::answers::check(&text) {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            bail!("{}: {}", a.display(), list.join("; "));
        }
        std::fs::write(t.join("oasis/answers.toml"), text)?;
    }
    if let Some(m) = &spec.model {
        let name = m.file_name().context("the model path has no file name")?;
        if std::fs::hard_link(m, t.join("oasis/models").join(name)).is_err() {
            std::fs::copy(m, t.join("oasis/models").join(name))
                .with_context(|| format!("cannot copy the model {}", m.display()))?;
        }
    }
    std::fs::write(t.join("boot/grub/grub.cfg"), files::grub_cfg(ISO_LABEL))?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(t)
        .args(["--", "-volid", ISO_LABEL])
        .output()
        .context("cannot run grub-mkrescue")?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
