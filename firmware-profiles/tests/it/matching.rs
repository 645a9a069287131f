use firmware_profiles::matching::select;

use crate::{builtin, inventory};

/// Every written inventory selects its SKU's profile (a damaged box still selects its own),
/// and a box no profile is for selects none, with every profile's reason.
#[test]
fn each_inventory_selects_its_profile() {
    let loaded = builtin();
    let profiles: Vec<_> = loaded.iter().map(|l| l.profile.clone()).collect();
    for (inv, want) in [
        ("hgx-h200-8", Some("hgx-h200-8")),
        ("hgx-h100-8", Some("hgx-h100-8")),
        ("hgx-h20-8", Some("hgx-h20-8")),
        ("l40s-4", Some("l40s-4")),
        ("rtx4090-8", Some("rtx4090-8")),
        ("h200-1", Some("h200-1")),
        ("cpu-dev", Some("cpu-dev")),
        ("hgx-h200-8-gpu-missing", Some("hgx-h200-8")),
        ("hgx-h200-8-old-driver", Some("hgx-h200-8")),
        ("hgx-h200-8-ecc-off", Some("hgx-h200-8")),
        ("hgx-h200-8-power-limit", Some("hgx-h200-8")),
        ("a100-2", None),
    ] {
        let sel = select(&profiles, &inventory(inv), None);
        assert_eq!(
            sel.profile.as_ref().map(|p| p.id.as_str()),
            want,
            "{inv}: {}",
            sel.how
        );
        // A candidate matches exactly when it has no reason not to.
        for c in &sel.candidates {
            assert_eq!(c.matched, c.reasons.is_empty(), "{inv}: {c:?}");
        }
    }
}

#[test]
fn the_reasons_say_why_others_do_not_match() {
    let loaded = builtin();
    let profiles: Vec<_> = loaded.iter().map(|l| l.profile.clone()).collect();
    let sel = select(&profiles, &inventory("a100-2"), None);
    assert_eq!(sel.how, "no profile matches this box");
    let reasons: Vec<String> = sel
        .candidates
        .iter()
        .map(|c| format!("{}: {}", c.id, c.reasons.join("; ")))
        .collect();
    expect_test::expect![[r#"
        hgx-h200-8: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x2335; GPU 0 has 81920 MiB of memory, below 140000 MiB; no NVSwitch found; this profile needs them
        hgx-h100-8: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x2330; no NVSwitch found; this profile needs them
        hgx-h20-8: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x2329; GPU 0 has 81920 MiB of memory, below 95000 MiB; no NVSwitch found; this profile needs them
        l40s-4: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x26b9
        rtx4090-8: GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x2684
        h200-1: the box has 2 GPUs; this profile has 1; GPU model NVIDIA A100-SXM4-80GB (0x20b2) is not one of 0x2335, 0x233b; GPU 0 has 81920 MiB of memory, below 140000 MiB
        cpu-dev: the box has 2 GPUs; this profile is for a box without GPUs"#]]
    .assert_eq(&reasons.join("\n"));
}

#[test]
fn a_named_profile_is_used_even_when_it_does_not_match() {
    let loaded = builtin();
    let profiles: Vec<_> = loaded.iter().map(|l| l.profile.clone()).collect();
    let h100 = crate::profile("hgx-h100-8");
    let sel = select(&profiles, &inventory("hgx-h200-8"), Some(&h100));
    assert_eq!(sel.profile.map(|p| p.id), Some("hgx-h100-8".to_string()));
    assert_eq!(
        sel.how,
        "`hgx-h100-8` was named in the configuration although it does not match this box: GPU model NVIDIA H200 (0x2335) is not one of 0x2330"
    );
}
