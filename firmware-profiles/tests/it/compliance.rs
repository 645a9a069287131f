use firmware_profiles::compliance::check;
use firmware_profiles::matching::select;
use firmware_profiles::{Verdict, plan};

use crate::{builtin, inventory};

/// The report for `inv` against the profile selected for it.
fn report(inv: &str) -> firmware_profiles::Report {
    let loaded = builtin();
    let profiles: Vec<_> = loaded.iter().map(|l| l.profile.clone()).collect();
    let inv = inventory(inv);
    let sel = select(&profiles, &inv, None);
    let p = sel.profile.unwrap_or_else(|| panic!("{}", sel.how));
    check(&p, &inv)
}

#[test]
fn verdicts_per_box() {
    for (inv, want) in [
        ("hgx-h200-8", Verdict::Pass),
        ("hgx-h100-8", Verdict::Pass),
        ("hgx-h20-8", Verdict::Pass),
        ("l40s-4", Verdict::Pass),
        ("rtx4090-8", Verdict::Pass),
        ("h200-1", Verdict::Pass),
        ("cpu-dev", Verdict::Pass),
        ("hgx-h200-8-gpu-missing", Verdict::Fail),
        ("hgx-h200-8-old-driver", Verdict::Fail),
        ("hgx-h200-8-ecc-off", Verdict::Fail),
        ("hgx-h200-8-power-limit", Verdict::Warn),
    ] {
        let r = report(inv);
        assert_eq!(r.verdict, want, "{inv}:\n{}", r.render());
    }
}

#[test]
fn compliant_h200_box() {
    expect_test::expect_file!["../snapshots/hgx-h200-8.txt"]
        .assert_eq(&report("hgx-h200-8").render());
}

#[test]
fn h200_box_with_a_gpu_missing() {
    expect_test::expect_file!["../snapshots/hgx-h200-8-gpu-missing.txt"]
        .assert_eq(&report("hgx-h200-8-gpu-missing").render());
}

#[test]
fn h200_box_with_an_old_driver() {
    expect_test::expect_file!["../snapshots/hgx-h200-8-old-driver.txt"]
        .assert_eq(&report("hgx-h200-8-old-driver").render());
}

#[test]
fn h200_box_with_ecc_off() {
    expect_test::expect_file!["../snapshots/hgx-h200-8-ecc-off.txt"]
        .assert_eq(&report("hgx-h200-8-ecc-off").render());
}

#[test]
fn h200_box_with_a_wrong_power_limit() {
    expect_test::expect_file!["../snapshots/hgx-h200-8-power-limit.txt"]
        .assert_eq(&report("hgx-h200-8-power-limit").render());
}

#[test]
fn cpu_only_machine() {
    expect_test::expect_file!["../snapshots/cpu-dev.txt"].assert_eq(&report("cpu-dev").render());
}

#[test]
fn the_engine_plan_follows_the_profile() {
    let p = crate::profile("hgx-h200-8");
    let plan = plan::plan(&p, &inventory("hgx-h200-8"));
    assert_eq!(plan.ranks, 8);
    assert_eq!(plan.max_batch_tokens, 16384);
    assert_eq!(plan.max_running, 256);
    assert_eq!(plan.weight_precision, "fp8");
    // 0.85 of eight GPUs' free memory (143251 MiB each).
    assert_eq!(plan.kv_memory_bytes, 8 * 143_251 * (1 << 20));
    assert_eq!(
        plan.kv_cache_bytes,
        (plan.kv_memory_bytes as f64 * 0.85) as u64
    );
    assert_eq!(
        plan.kv_basis,
        "the free memory of GPUs 0, 1, 2, 3, 4, 5, 6, 7"
    );
    let cpu = plan::plan(&crate::profile("cpu-dev"), &inventory("cpu-dev"));
    assert_eq!(cpu.ranks, 1);
    assert_eq!(cpu.kv_cache_bytes, ((20u64 << 30) as f64 * 0.10) as u64);
    assert_eq!(cpu.kv_basis, "the host's available memory");
}
