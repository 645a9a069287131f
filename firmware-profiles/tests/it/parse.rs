use firmware_profiles::Profile;

use crate::here;

#[test]
fn every_builtin_profile_parses_and_the_required_skus_are_there() {
    let ids: Vec<String> = crate::builtin().into_iter().map(|l| l.profile.id).collect();
    for want in [
        "hgx-h200-8",
        "hgx-h100-8",
        "hgx-h20-8",
        "l40s-4",
        "rtx4090-8",
        "h200-1",
        "cpu-dev",
    ] {
        assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
    }
}

#[test]
fn the_shipped_files_are_the_compiled_in_ones() {
    // `profiles/*.toml` is what an operator reads and the installer copies; the binary
    // carries the same text.
    for (name, text) in firmware_profiles::BUILTIN {
        let path = here("../profiles").join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(on_disk, text, "{}", path.display());
    }
    let files = std::fs::read_dir(here("../profiles"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(
        files,
        firmware_profiles::BUILTIN.len(),
        "a profile file is not compiled in"
    );
}

/// Each file in `tests/bad/` is rejected with exactly the error in `tests/bad/expected.txt`
/// (`FILE: ERROR`, continuation lines indented).
#[test]
fn bad_profiles_are_rejected_with_line_and_field() {
    let expected_text = std::fs::read_to_string(here("bad/expected.txt")).unwrap_or_default();
    let mut expected: Vec<(String, String)> = Vec::new();
    for line in expected_text.lines() {
        if let Some(rest) = line.strip_prefix("    ") {
            if let Some(last) = expected.last_mut() {
                last.1.push('\n');
                last.1.push_str(rest);
            }
        } else if let Some((file, err)) = line.split_once(": ") {
            expected.push((file.to_string(), err.to_string()));
        }
    }
    let mut files: Vec<String> = std::fs::read_dir(here("bad"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut got = String::new();
    for f in &files {
        let text = std::fs::read_to_string(here("bad").join(f)).unwrap_or_default();
        match Profile::parse(&text, f) {
            Ok(_) => panic!("{f} was accepted"),
            Err(e) => {
                let e = e.to_string();
                // The origin leads every line of the error.
                assert!(e.starts_with(&format!("{f}:")), "{e}");
                got.push_str(&format!("{f}: {}\n", e.replace('\n', "\n    ")));
            }
        }
    }
    let want: String = expected
        .iter()
        .map(|(f, e)| format!("{f}: {}\n", e.replace('\n', "\n    ")))
        .collect();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let _ = std::fs::write(here("bad/expected.txt"), &got);
        return;
    }
    assert_eq!(
        got, want,
        "(UPDATE_EXPECT=1 rewrites tests/bad/expected.txt)"
    );
}

#[test]
fn a_profile_dir_adds_profiles_and_a_duplicate_id_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let own = firmware_profiles::BUILTIN[6]
        .1
        .replace("id = \"cpu-dev\"", "id = \"lab-cpu\"");
    std::fs::write(dir.path().join("lab.toml"), own).unwrap_or_default();
    let all = firmware_profiles::load_all(Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    assert!(all.iter().any(|l| l.profile.id == "lab-cpu"));
    std::fs::write(dir.path().join("dup.toml"), firmware_profiles::BUILTIN[6].1)
        .unwrap_or_default();
    let err = firmware_profiles::load_all(Some(dir.path()))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("profile `cpu-dev` is defined twice: in builtin:cpu-dev.toml and in "),
        "{err}"
    );
}
