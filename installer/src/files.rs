//! The files the system image carries besides its packages: systemd units, mounts,
//! network and SSH settings. One image serves as the installer (booted from the ISO with
//! `oasis.mode=install`) and as the installed system (booted from a slot with
//! `oasis.slot=a|b` and `systemd.unit=oasis.target`, which pulls in the installed box's
//! units); each unit's condition also names its role.

/// (path in the image, mode, contents).
pub const FILES: &[(&str, u32, &str)] = &[
    (
        "etc/systemd/system/oasis.target",
        0o644,
        "[Unit]
Description=Oasis appliance (booted from an installed system slot)
Documentation=https://github.com/oasis-appliance/oasis
# An installed slot boots with systemd.unit=oasis.target; the installer medium boots
# multi-user.target, so nothing of the installed box (its partitions, the daemon) is
# waited for there.
Requires=multi-user.target
After=multi-user.target
AllowIsolate=yes
",
    ),
    (
        "etc/systemd/system/ssh.service.d/oasis.conf",
        0o644,
        "[Unit]
# The host key lives on the data partition (made by oasis-config.service at first boot).
After=oasis-config.service
ConditionPathExists=/var/lib/oasis/system/ssh/ssh_host_ed25519_key
",
    ),
    (
        "etc/systemd/system/oasis.service",
        0o644,
        "[Unit]
Description=Oasis daemon
Documentation=https://github.com/oasis-appliance/oasis
ConditionKernelCommandLine=oasis.slot
After=network-online.target oasis-config.service
Wants=network-online.target
RequiresMountsFor=/var/lib/oasis /efi

[Service]
Environment=OASIS_CONFIG=/var/lib/oasis/oasis.toml
ExecStart=/usr/bin/oasis serve
Restart=on-failure
RestartSec=3
LimitNOFILE=65536

[Install]
WantedBy=oasis.target
",
    ),
    (
        "etc/systemd/system/oasis-healthy.service",
        0o644,
        "[Unit]
Description=Oasis: this system slot is good once the daemon is ready
ConditionKernelCommandLine=oasis.slot
After=oasis.service
Before=boot-complete.target
# A slot on trial that does not get ready reboots; systemd-boot counts the try.
FailureAction=reboot

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=OASIS_CONFIG=/var/lib/oasis/oasis.toml
ExecStart=/usr/bin/oasis system wait-ready
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
RequiredBy=boot-complete.target
WantedBy=oasis.target
",
    ),
    (
        "etc/systemd/system/oasis-banner.service",
        0o644,
        "[Unit]
Description=Oasis: the pairing code and TLS fingerprint on the consoles
ConditionKernelCommandLine=oasis.slot
After=oasis-healthy.service
Requires=oasis-healthy.service

[Service]
Type=oneshot
Environment=OASIS_CONFIG=/var/lib/oasis/oasis.toml
ExecStart=/usr/bin/oasis system banner --tty /dev/ttyS0 --tty /dev/tty1

[Install]
WantedBy=oasis.target
",
    ),
    (
        "etc/systemd/system/oasis-config.service",
        0o644,
        "[Unit]
Description=Oasis: this box's host name, time zone, network and SSH keys
ConditionKernelCommandLine=oasis.slot
DefaultDependencies=no
RequiresMountsFor=/var/lib/oasis
After=local-fs.target
Before=network-pre.target ssh.service oasis.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/oasis-installer apply-config

[Install]
WantedBy=oasis.target
",
    ),
    (
        "etc/systemd/system/oasis-install.service",
        0o644,
        "[Unit]
Description=Oasis: unattended install from the answers file
ConditionKernelCommandLine=oasis.mode=install
After=multi-user.target systemd-udev-settle.service
Wants=systemd-udev-settle.service

[Service]
Type=oneshot
ExecStart=/usr/bin/oasis-installer install
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
",
    ),
    (
        "etc/systemd/system/var-lib-oasis.mount",
        0o644,
        "[Unit]
Description=Oasis data partition
ConditionKernelCommandLine=oasis.slot
Before=local-fs.target

[Mount]
What=/dev/disk/by-partlabel/oasis-data
Where=/var/lib/oasis
Type=ext4
Options=defaults,noatime

[Install]
WantedBy=oasis.target
",
    ),
    (
        "etc/systemd/system/efi.mount",
        0o644,
        "[Unit]
Description=EFI system partition (boot entries of the system slots)
ConditionKernelCommandLine=oasis.slot
Before=local-fs.target

[Mount]
What=/dev/disk/by-partlabel/oasis-esp
Where=/efi
Type=vfat
Options=umask=0077,noatime

[Install]
WantedBy=oasis.target
",
    ),
    (
        "usr/lib/systemd/network/90-oasis-dhcp.network",
        0o644,
        "[Match]
Name=en* eth*

[Network]
DHCP=yes
",
    ),
    (
        "etc/ssh/sshd_config.d/oasis.conf",
        0o644,
        "# Keys live on the data partition; the system image is the same on every box.
HostKey /var/lib/oasis/system/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /var/lib/oasis/system/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
",
    ),
    ("etc/hostname", 0o644, "oasis\n"),
    (
        "etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    ("etc/issue", 0o644, "Oasis appliance \\n (\\l)\n\n"),
];

/// Units enabled in the image.
pub const ENABLED: &[&str] = &[
    "oasis.service",
    "oasis-healthy.service",
    "oasis-banner.service",
    "oasis-config.service",
    "oasis-install.service",
    "var-lib-oasis.mount",
    "efi.mount",
    "systemd-networkd.service",
    "ssh.service",
];

/// Packages of every image.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "live-boot",
    "systemd-boot",
    "systemd-boot-efi",
    "fdisk",
    "e2fsprogs",
    "dosfstools",
    "iproute2",
    "openssh-server",
    "tzdata",
    "ca-certificates",
    "procps",
];

/// NVIDIA's CUDA repository for Debian 12 (driver 580 and CUDA 13 libraries).
pub const NVIDIA_REPO: &str =
    "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/";

/// What a GPU image adds: the open kernel modules (built by DKMS for the image's kernel),
/// NVML, cuBLAS and NVRTC of CUDA 13.
pub const GPU_PACKAGES: &[&str] = &[
    "linux-headers-amd64",
    "nvidia-open",
    "libnvidia-ml1",
    "libcublas-13-0",
    "cuda-nvrtc-13-0",
    "firmware-misc-nonfree",
];

/// The ISO's boot menu (GRUB, BIOS and UEFI): installs after 5 seconds.
pub fn grub_cfg(label: &str) -> String {
    format!(
        "set timeout=5
set default=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
menuentry \"Install Oasis (erases the disk the answers file selects)\" {{
  linux /live/vmlinuz boot=live live-media=/dev/disk/by-label/{label} oasis.mode=install console=tty0 console=ttyS0,115200 panic=10
  initrd /live/initrd.img
}}
menuentry \"Oasis live system (installs nothing)\" {{
  linux /live/vmlinuz boot=live live-media=/dev/disk/by-label/{label} console=tty0 console=ttyS0,115200
  initrd /live/initrd.img
}}
"
    )
}

/// systemd-boot's settings on the installed ESP.
pub const LOADER_CONF: &str = "timeout 3\nconsole-mode keep\neditor no\n";
