//! The firmware profile at the daemon's start: read the box's inventory, pick its profile
//! (or the configured one), check the box against it, apply its GPU settings when the
//! policy says so, and let its engine plan fill the engine settings the configuration
//! left at their defaults. `GET /admin/v1/profile` serves the result.

use std::path::Path;

use anyhow::{Result, bail};
use firmware_profiles::apply::{self, Outcome};
use firmware_profiles::compliance::{self, Verdict};
use firmware_profiles::matching::{self, Selection};
use firmware_profiles::{EnginePlan, Inventory, Report};
pub use oasis_api::EngineSetting;
use serde::Serialize;

use crate::config::{Origin, ProfilePolicy, ServeConfig};
use crate::telemetry::alerts::AlertRules;
use crate::telemetry::inventory;

/// Smallest KV cache the CPU plan gives a model.
const KV_CACHE_BYTES_MIN: usize = 64 << 20;

/// The profile the daemon runs under, and what came of it at start.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileState {
    pub policy: &'static str,
    /// Where the selected profile came from (`builtin:hgx-h200-8.toml` or a path).
    pub origin: Option<String>,
    #[serde(flatten)]
    pub selection: Selection,
    /// The compliance report at start (after applying, under `apply`).
    pub report: Option<Report>,
    /// The plan the profile gives on this box.
    pub plan: Option<EnginePlan>,
    /// The engine settings in force, each with where it came from.
    pub engine: Vec<EngineSetting>,
    /// The setting changes made (or listed, for a recorded inventory) under `apply`.
    pub applied: Vec<Outcome>,
    /// Settings the profile pins that the GPUs cannot take.
    pub apply_problems: Vec<String>,
    pub inventory: Inventory,
}

/// Selects and checks the profile, applies it under the `apply` policy, refuses a
/// failing box under `refuse`, and fills `config`'s defaulted engine settings from the
/// plan (`models`: how many models share the KV budget).
pub fn prepare(config: &mut ServeConfig, models: usize) -> Result<ProfileState> {
    let Selected {
        inventory: mut inv,
        selection,
        origin,
        ..
    } = select(
        config.profiles_dir.as_deref(),
        config.inventory.as_deref(),
        config.profile.as_deref(),
    )?;
    let mut applied = Vec::new();
    let mut apply_problems = Vec::new();
    if let (ProfilePolicy::Apply, Some(p)) = (config.profile_policy, &selection.profile) {
        let (changes, problems) = apply::changes(p, &inv);
        apply_problems = problems;
        for why in &apply_problems {
            tracing::warn!(profile = %p.id, "{why}");
        }
        if config.inventory.is_some() {
            tracing::warn!(
                "the inventory is recorded, not read from this box: the profile's changes are listed, not made"
            );
            applied = apply::apply(&changes, None);
        } else if !changes.is_empty() {
            if crate::audit::euid() != Some(0) {
                bail!(
                    "`profile_policy = \"apply\"` changes GPU settings through NVML, which needs root: run the daemon as root, or use `warn`"
                );
            }
            let mut control =
                inventory::NvmlControl::open().map_err(|e| anyhow::anyhow!("cannot apply: {e}"))?;
            applied = apply::apply(&changes, Some(&mut control));
            audit_outcomes(
                &config.data_dir,
                "oasis serve (profile_policy = apply)",
                &p.id,
                &applied,
            )?;
            inv = inventory::read(None)?;
        }
        for o in &applied {
            tracing::info!(profile = %p.id, gpu = o.change.gpu, setting = o.change.setting.name(), before = %o.change.before, after = %o.change.after, result = o.result, error = ?o.error, "profile setting");
        }
    }
    let report = selection
        .profile
        .as_ref()
        .map(|p| compliance::check(p, &inv));
    match (&selection.profile, &report) {
        (Some(p), Some(r)) => {
            tracing::info!(profile = %p.id, verdict = r.verdict.as_str(), how = %selection.how, "firmware profile");
            for c in r.checks.iter().filter(|c| c.verdict != Verdict::Pass) {
                tracing::warn!(check = %c.id, verdict = c.verdict.as_str(), expected = %c.expected, found = %c.found, remedy = ?c.remedy, "profile check");
            }
            if config.profile_policy == ProfilePolicy::Refuse && r.verdict == Verdict::Fail {
                bail!(
                    "this box fails its firmware profile's check and `profile_policy` is `refuse`:\n{}",
                    r.render()
                );
            }
        }
        _ => {
            let why: Vec<String> = selection
                .candidates
                .iter()
                .map(|c| format!("  {}: {}", c.id, c.reasons.join("; ")))
                .collect();
            if config.profile_policy == ProfilePolicy::Refuse {
                bail!(
                    "no firmware profile matches this box and `profile_policy` is `refuse`:\n{}",
                    why.join("\n")
                );
            }
            tracing::warn!(
                "no firmware profile matches this box; the engine runs on the built-in defaults:\n{}",
                why.join("\n")
            );
        }
    }
    let plan = selection
        .profile
        .as_ref()
        .map(|p| firmware_profiles::plan::plan(p, &inv));
    let engine = fill_engine(config, selection.profile.as_ref(), plan.as_ref(), models);
    tracing::info!(
        "engine plan: {}",
        engine
            .iter()
            .map(|s| format!("{} {} ({})", s.key, s.value, s.source))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ProfileState {
        policy: config.profile_policy.as_str(),
        origin,
        selection,
        report,
        plan,
        engine,
        applied,
        apply_problems,
        inventory: inv,
    })
}

/// The known profiles, a box's inventory and the profile selected for it.
#[derive(Debug)]
pub struct Selected {
    pub all: Vec<firmware_profiles::Loaded>,
    pub inventory: Inventory,
    pub selection: Selection,
    /// Where the selected profile came from (`builtin:NAME` or a path).
    pub origin: Option<String>,
}

/// Loads the built-in profiles (plus `profiles_dir`), resolves `name` (an id or a path)
/// before touching the hardware, reads the inventory (`recorded`, else this box) and
/// selects: `name` when given, else the best match.
pub fn select(
    profiles_dir: Option<&Path>,
    recorded: Option<&Path>,
    name: Option<&str>,
) -> Result<Selected> {
    let all = firmware_profiles::load_all(profiles_dir)?;
    let named = name
        .map(|n| firmware_profiles::resolve(n, &all))
        .transpose()?;
    let inventory = inventory::read(recorded)?;
    let profiles: Vec<_> = all.iter().map(|l| l.profile.clone()).collect();
    let selection = matching::select(&profiles, &inventory, named.as_ref().map(|l| &l.profile));
    let origin = selection.profile.as_ref().and_then(|p| {
        named
            .iter()
            .chain(all.iter())
            .find(|l| l.profile.id == p.id)
            .map(|l| l.origin.clone())
    });
    Ok(Selected {
        all,
        inventory,
        selection,
        origin,
    })
}

/// Writes one audit entry per change made.
pub fn audit_outcomes(
    data_dir: &Path,
    actor: &str,
    profile: &str,
    outcomes: &[Outcome],
) -> Result<()> {
    for o in outcomes.iter().filter(|o| o.result != "dry_run") {
        crate::audit::append(
            data_dir,
            &crate::audit::Entry {
                ts_ms: crate::telemetry::now_ms(),
                actor,
                action: "profile.apply",
                detail: serde_json::json!({ "profile": profile, "change": o }),
            },
        )?;
    }
    Ok(())
}

/// Sets the engine settings still at their defaults from `plan`; reports each setting.
fn fill_engine(
    config: &mut ServeConfig,
    profile: Option<&firmware_profiles::Profile>,
    plan: Option<&EnginePlan>,
    models: usize,
) -> Vec<EngineSetting> {
    let from = |id: &str| Origin::Profile(id.to_string());
    let mut kv_note = None;
    if let (Some(p), Some(plan)) = (profile, plan) {
        let o = &mut config.origins;
        if o.ranks == Origin::Default {
            config.ranks = plan.ranks as usize;
            o.ranks = from(&p.id);
        }
        if o.max_batch_tokens == Origin::Default {
            config.max_batch_tokens = plan.max_batch_tokens as usize;
            o.max_batch_tokens = from(&p.id);
        }
        if o.max_running == Origin::Default {
            config.max_running = plan.max_running as usize;
            o.max_running = from(&p.id);
        }
        if o.kv_cache_bytes == Origin::Default {
            if p.cpu_only() {
                // The engine's own machine, even when the inventory is a recorded one.
                let available = inventory::host().memory_available_bytes;
                let share = (available as f64 * plan.kv_cache_fraction) as usize / models.max(1);
                config.kv_cache_bytes = share.clamp(KV_CACHE_BYTES_MIN, 1 << 40);
                o.kv_cache_bytes = from(&p.id);
                kv_note = Some(format!(
                    "{} of the host's {} available bytes, shared by {} model{}",
                    plan.kv_cache_fraction,
                    available,
                    models.max(1),
                    if models > 1 { "s" } else { "" }
                ));
            } else {
                // On the GPU: the fraction of the memory left once a model's weights are
                // loaded, shared by the models.
                config.gpu_kv_fraction = Some(plan.kv_cache_fraction / models.max(1) as f64);
                o.kv_cache_bytes = from(&p.id);
                kv_note = Some(format!(
                    "on a GPU, {} of the memory free after each model's weights, shared by {} model{} (on the CPU the built-in size)",
                    plan.kv_cache_fraction,
                    models.max(1),
                    if models > 1 { "s" } else { "" }
                ));
            }
        }
    }
    let o = &config.origins;
    let mut out = vec![
        setting("ranks", config.ranks, &o.ranks, None),
        setting(
            "kv_cache_bytes",
            config.kv_cache_bytes,
            &o.kv_cache_bytes,
            kv_note,
        ),
        setting(
            "max_batch_tokens",
            config.max_batch_tokens,
            &o.max_batch_tokens,
            None,
        ),
        setting("max_running", config.max_running, &o.max_running, None),
    ];
    if let (Some(p), Some(plan)) = (profile, plan) {
        out.push(EngineSetting {
            key: "weight_precision".into(),
            value: plan.weight_precision.clone().into(),
            source: from(&p.id).to_string(),
            note: Some("the precision models for this box should ship in; the engine runs what the file holds".into()),
        });
    }
    out
}

fn setting(
    key: &'static str,
    value: usize,
    origin: &Origin,
    note: Option<String>,
) -> EngineSetting {
    EngineSetting {
        key: key.into(),
        value: value.into(),
        source: origin.to_string(),
        note,
    }
}

/// The daemon's alert rules with the profile's health overrides.
pub fn alert_rules(profile: Option<&firmware_profiles::Profile>) -> AlertRules {
    let mut rules = AlertRules::default();
    let Some(p) = profile else { return rules };
    let h = &p.health;
    if let Some(c) = h.gpu_temp_max_c {
        rules.gpu_temp_c = c;
    }
    if let Some(c) = h.mem_temp_max_c {
        rules.mem_temp_c = c;
    }
    let a = &h.alerts;
    if let Some(n) = a.throttle_samples {
        rules.throttle_samples = n;
    }
    if let Some(r) = a.disk_free_ratio {
        rules.disk_free_ratio = r;
    }
    if let Some(r) = a.mem_available_ratio {
        rules.mem_available_ratio = r;
    }
    if let Some(x) = &a.critical_xids {
        rules.critical_xids.clone_from(x);
    }
    if let Some(n) = a.xid_hold_samples {
        rules.xid_hold_samples = n;
    }
    rules
}

/// The profile answer: the state at start, with the compliance report checked again on
/// `fresh` (the box as read now) when it could be read.
pub fn answer(p: &ProfileState, fresh: Option<Inventory>, now_ms: u64) -> oasis_api::ProfileAnswer {
    let profile = p.selection.profile.as_ref();
    let start = p.report.as_ref().map(report_view);
    let (report, report_at_start, inventory) = match (fresh, profile) {
        (Some(inv), Some(profile)) => (
            Some(report_view(&compliance::check(profile, &inv))),
            start,
            serde_json::to_value(inv),
        ),
        _ => (start, None, serde_json::to_value(&p.inventory)),
    };
    oasis_api::ProfileAnswer {
        policy: p.policy.into(),
        origin: p.origin.clone(),
        profile: profile
            .and_then(|f| serde_json::to_value(f).ok())
            .and_then(|v| serde_json::from_value(v).ok()),
        how: p.selection.how.clone(),
        candidates: p
            .selection
            .candidates
            .iter()
            .map(|c| oasis_api::ProfileCandidate {
                id: c.id.clone(),
                name: c.name.clone(),
                matched: c.matched,
                reasons: c.reasons.clone(),
            })
            .collect(),
        report,
        report_at_start,
        plan: p
            .plan
            .as_ref()
            .and_then(|plan| serde_json::to_value(plan).ok()),
        engine: p.engine.clone(),
        applied: p
            .applied
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect(),
        apply_problems: p.apply_problems.clone(),
        inventory: inventory.unwrap_or_default(),
        checked_at_ms: now_ms,
    }
}

/// A compliance report as the API shows it.
fn report_view(r: &Report) -> oasis_api::ComplianceReport {
    let verdict = |v: Verdict| match v {
        Verdict::Pass => oasis_api::Verdict::Pass,
        Verdict::Warn => oasis_api::Verdict::Warn,
        Verdict::Fail => oasis_api::Verdict::Fail,
    };
    oasis_api::ComplianceReport {
        profile: r.profile.clone(),
        profile_name: r.profile_name.clone(),
        source: r.source.clone(),
        verdict: verdict(r.verdict),
        checks: r
            .checks
            .iter()
            .map(|c| oasis_api::ComplianceCheck {
                id: c.id.clone(),
                expected: c.expected.clone(),
                found: c.found.clone(),
                verdict: verdict(c.verdict),
                remedy: c.remedy.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(id: &str) -> firmware_profiles::Profile {
        let all = firmware_profiles::builtin().unwrap_or_else(|e| panic!("{e}"));
        firmware_profiles::resolve(id, &all)
            .unwrap_or_else(|e| panic!("{e}"))
            .profile
    }

    #[test]
    fn a_profiles_health_section_becomes_the_alert_rules() {
        let defaults = AlertRules::default();
        let rules = alert_rules(Some(&builtin("l40s-4")));
        assert_eq!(rules.gpu_temp_c, 83.0);
        assert_eq!(rules.mem_temp_c, defaults.mem_temp_c);
        let cpu = alert_rules(Some(&builtin("cpu-dev")));
        assert_eq!(cpu.disk_free_ratio, 0.02);
        assert_eq!(cpu.mem_available_ratio, 0.03);
        assert_eq!(cpu.critical_xids, defaults.critical_xids);
        assert_eq!(alert_rules(None).gpu_temp_c, defaults.gpu_temp_c);
    }
}
