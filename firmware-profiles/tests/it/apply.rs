use firmware_profiles::apply::{GpuControl, Setting, apply, changes, render};

use crate::{inventory, profile};

#[test]
fn a_compliant_box_needs_no_change() {
    let (list, impossible) = changes(&profile("hgx-h200-8"), &inventory("hgx-h200-8"));
    assert!(list.is_empty(), "{list:?}");
    assert!(impossible.is_empty());
    assert_eq!(
        render(&apply(&list, None)),
        "Nothing to change: every pinned setting already has its value.\n"
    );
}

#[test]
fn dry_run_lists_each_change_before_and_after() {
    let mut inv = inventory("hgx-h200-8-power-limit");
    inv.gpus[6].ecc = Some(false);
    inv.gpus[6].ecc_pending = Some(false);
    inv.gpus[7].compute_mode = Some("exclusive_process".into());
    let (list, impossible) = changes(&profile("hgx-h200-8"), &inv);
    assert!(impossible.is_empty());
    expect_test::expect![[r#"
          GPU 2   power_limit    500 W -> 700 W  dry run
          GPU 3   persistence    off -> on  dry run
          GPU 6   ecc            off -> on  dry run
          GPU 7   compute_mode   exclusive_process -> default  dry run
    "#]]
    .assert_eq(&render(&apply(&list, None)));
    assert!(
        list.iter()
            .all(|c| c.needs_reboot == matches!(c.setting, Setting::Ecc(_)))
    );
}

/// Records what it was asked to set; fails power limits (as NVML does without root).
#[derive(Default)]
struct Recorder(Vec<(u32, Setting)>);

impl GpuControl for Recorder {
    fn set(&mut self, gpu: u32, setting: Setting) -> Result<(), String> {
        self.0.push((gpu, setting));
        match setting {
            Setting::PowerLimitW(_) => Err("Insufficient Permissions".into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn applying_goes_through_the_control_and_reports_each_result() {
    let mut inv = inventory("hgx-h200-8-power-limit");
    inv.gpus[6].ecc = Some(false);
    inv.gpus[6].ecc_pending = Some(false);
    let (list, _) = changes(&profile("hgx-h200-8"), &inv);
    let mut ctl = Recorder::default();
    let out = apply(&list, Some(&mut ctl));
    assert_eq!(
        ctl.0,
        vec![
            (2, Setting::PowerLimitW(700)),
            (3, Setting::Persistence(true)),
            (6, Setting::Ecc(true))
        ]
    );
    expect_test::expect![[r#"
          GPU 2   power_limit    500 W -> 700 W  failed: Insufficient Permissions
          GPU 3   persistence    off -> on  applied
          GPU 6   ecc            off -> on  pending reboot
    "#]]
    .assert_eq(&render(&out));
}

#[test]
fn a_power_limit_the_gpu_refuses_is_reported_not_attempted() {
    let mut inv = inventory("hgx-h20-8");
    inv.gpus[0].power_limit_max_w = Some(350);
    inv.gpus[0].power_limit_w = Some(350);
    let (list, impossible) = changes(&profile("hgx-h20-8"), &inv);
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(
        impossible,
        vec!["GPU 0: a 400 W power limit is outside what it accepts (200..350 W)".to_string()]
    );
}

#[test]
fn a_pending_ecc_change_is_not_made_twice() {
    let mut inv = inventory("hgx-h200-8");
    inv.gpus[1].ecc = Some(false);
    inv.gpus[1].ecc_pending = Some(true);
    let (list, _) = changes(&profile("hgx-h200-8"), &inv);
    assert!(list.is_empty(), "{list:?}");
}
