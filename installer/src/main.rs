//! `oasis-installer`: builds the appliance's system image, its bootable ISO and signed
//! update bundles (on a build machine), and installs the system unattended (on the box,
//! booted from the ISO).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

mod answers;
mod config;
mod disks;
mod files;
mod image;
mod install;

#[derive(Debug, Parser)]
#[command(
    name = "oasis-installer",
    version,
    about = "Builds the Oasis appliance's ISO and update bundles; installs it unattended"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the system image and the bootable ISO (BIOS and UEFI, USB or optical).
    BuildIso(BuildIsoArgs),
    /// Build only the system image (for bundles).
    BuildSystem(SystemArgs),
    /// Check an answers file: every problem with its line; exit 1 when there is one.
    CheckAnswers { file: PathBuf },
    /// Make a signed update bundle of a built system image.
    Bundle(BundleArgs),
    /// Make an update signing key pair (the public half goes into the image).
    Keygen {
        /// Writes DIR/update-key.secret (mode 0600) and DIR/update-key.pub.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Verify an update bundle against a public key, writing nothing.
    VerifyBundle {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// List this machine's disks as the answers file's [disk] section sees them.
    Disks,
    /// Install from the medium this system booted from (run by oasis-install.service).
    Install {
        /// Where the medium is mounted.
        #[arg(long, default_value = install::MEDIUM)]
        medium: PathBuf,
        /// Write the disk but neither reboot nor power off afterwards.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Apply this box's settings from the data partition (run at every boot).
    ApplyConfig {
        #[arg(long, default_value = "/var/lib/oasis")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct SystemArgs {
    /// Where the image goes (vmlinuz, initrd.img, filesystem.squashfs, build.json).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    build: BuildOptions,
}

/// What the system image is built from.
#[derive(Debug, Args)]
struct BuildOptions {
    /// The `oasis` binary [default: next to this one].
    #[arg(long, value_name = "FILE")]
    oasis: Option<PathBuf>,
    /// The firmware profile the box is for (a GPU profile adds NVIDIA's driver).
    #[arg(long, default_value = "cpu-dev", value_name = "ID")]
    profile: String,
    /// The built web console to serve (desktop-ui/dist).
    #[arg(long, value_name = "DIR")]
    console: Option<PathBuf>,
    /// The update key's public half (`keygen`), baked in so the box accepts bundles
    /// signed with it.
    #[arg(long, value_name = "FILE")]
    update_key: Option<PathBuf>,
    /// The system version [default: the date and time of the build].
    #[arg(long = "system-version", value_name = "V")]
    version: Option<String>,
    #[arg(
        long,
        default_value = "http://deb.debian.org/debian",
        value_name = "URL"
    )]
    mirror: String,
    /// Downloaded packages, kept between builds [default: ~/.cache/oasis/debs].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// NVIDIA's repository key (GPU profiles).
    #[arg(long, value_name = "FILE")]
    nvidia_keyring: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BuildIsoArgs {
    /// The ISO to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A model (GGUF) the box serves from its first boot.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The answers file for the unattended install (checked first).
    #[arg(long, value_name = "FILE")]
    answers: Option<PathBuf>,
    /// Use an image built before (build-system) instead of building one.
    #[arg(long, value_name = "DIR")]
    system: Option<PathBuf>,
    #[command(flatten)]
    build: BuildOptions,
}

#[derive(Debug, Args)]
struct BundleArgs {
    /// A built system image (build-system's --out).
    #[arg(long, value_name = "DIR")]
    system: PathBuf,
    /// The secret key (`keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn default_version() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = appliance_host::civil((secs / 86400) as i64);
    let hm = secs % 86400 / 60;
    format!("{y:04}.{m:02}.{d:02}-{:02}{:02}", hm / 60, hm % 60)
}

fn read_key(path: &Path) -> Result<String> {
    let k = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the key {}", path.display()))?;
    Ok(k.trim().to_string())
}

fn system_spec(b: BuildOptions) -> Result<image::SystemSpec> {
    let me = std::env::current_exe().context("cannot find this program")?;
    let oasis = b.oasis.unwrap_or_else(|| me.with_file_name("oasis"));
    let update_key = match b.update_key {
        Some(p) => {
            let k = read_key(&p)?;
            system_image::bundle::verifying_key(&k)?;
            Some(k)
        }
        None => None,
    };
    let cache = b.cache.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
        home.join(".cache/oasis/debs")
    });
    Ok(image::SystemSpec {
        oasis,
        installer: me,
        console: b.console,
        profile: b.profile,
        update_key,
        version: b.version.unwrap_or_else(default_version),
        mirror: b.mirror,
        cache,
        nvidia_keyring: b.nvidia_keyring,
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::CheckAnswers { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            match answers::check(&text) {
                Ok(a) => {
                    println!("{}: OK", file.display());
                    println!("{}", serde_json::to_string_pretty(&a)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    for p in &problems {
                        eprintln!("{}: {p}", file.display());
                    }
                    eprintln!("{} problem(s)", problems.len());
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::BuildSystem(a) => {
            let spec = system_spec(a.build)?;
            let info = image::build_system(&spec, &a.out)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BuildIso(a) => {
            let started = std::time::Instant::now();
            if let Some(ans) = &a.answers {
                let text = std::fs::read_to_string(ans)
                    .with_context(|| format!("cannot read {}", ans.display()))?;
                if let Err(problems) = answers::check(&text) {
                    for p in &problems {
                        eprintln!("{}: {p}", ans.display());
                    }
                    bail!(
                        "the answers file has {} problem(s); no ISO was made",
                        problems.len()
                    );
                }
            }
            let system = match a.system {
                Some(s) => s,
                None => {
                    let spec = system_spec(a.build)?;
                    let dir = a.out.with_extension("system");
                    image::build_system(&spec, &dir)?;
                    dir
                }
            };
            image::build_iso(
                &system,
                &image::IsoSpec {
                    answers: a.answers,
                    model: a.model,
                },
                &a.out,
            )?;
            let size = std::fs::metadata(&a.out)?.len();
            println!(
                "{}: {:.1} MB in {:.0} s",
                a.out.display(),
                size as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bundle(a) => {
            let secret = read_key(&a.key)?;
            let info: image::BuildInfo =
                serde_json::from_slice(&std::fs::read(a.system.join("build.json")).with_context(
                    || format!("{} is not a built system image", a.system.display()),
                )?)?;
            let m = system_image::bundle::create(
                &a.system,
                &info.version,
                &info.profile,
                &secret,
                &a.out,
            )?;
            println!(
                "{}: Oasis {} ({}), signed by {}",
                a.out.display(),
                m.version,
                m.profile,
                system_image::bundle::public_of(&secret)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen { out } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::create_dir_all(&out)?;
            let (secret, public) = system_image::bundle::generate_key()?;
            let sp = out.join("update-key.secret");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&sp)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", sp.display())
                })?;
            writeln!(f, "{secret}")?;
            std::fs::write(out.join("update-key.pub"), format!("{public}\n"))?;
            println!(
                "{} (keep it secret) and {}",
                sp.display(),
                out.join("update-key.pub").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::VerifyBundle { file, key } => {
            let k = system_image::bundle::verifying_key(&read_key(&key)?)?;
            let v = system_image::bundle::verify(&file, &k)?;
            println!(
                "{}: Oasis {} ({}), signature and digests good",
                file.display(),
                v.manifest.version,
                v.manifest.profile
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Disks => {
            for d in disks::list_here()? {
                println!("{}", serde_json::to_string(&d)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install { medium, no_reboot } => match install::install(&medium) {
            Ok(a) => {
                if no_reboot {
                    return Ok(ExitCode::SUCCESS);
                }
                let action = if a.poweroff_after_install {
                    "poweroff"
                } else {
                    "reboot"
                };
                install::say(&format!("Installation complete; {action} in 3 seconds."));
                std::thread::sleep(std::time::Duration::from_secs(3));
                let st = std::process::Command::new("systemctl")
                    .arg(action)
                    .status()?;
                if !st.success() {
                    bail!("systemctl {action} failed");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                install::say(&format!("OASIS INSTALL STOPPED: {e:#}"));
                Ok(ExitCode::from(1))
            }
        },
        Cmd::ApplyConfig { data_dir } => {
            for d in config::apply(&data_dir, Path::new("/"))? {
                println!("{d}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
