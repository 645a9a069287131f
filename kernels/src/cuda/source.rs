//! The CUDA kernels' sources, compiled into the binary as text: NVRTC compiles them at run
//! time for the GPU found, and `oasis gpu kernels` (nvcc) compiles them ahead of time in CI
//! to check registers and spills for each target architecture. Built with or without the
//! `cuda` feature.

/// The shared header, included by every file.
pub const COMMON: &str = include_str!("kernels/common.cuh");

/// Each kernel file by name.
pub const FILES: &[(&str, &str)] = &[
    ("matmul.cu", include_str!("kernels/matmul.cu")),
    ("ops.cu", include_str!("kernels/ops.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
];

/// The whole program as one translation unit: the header once, then every file with its
/// `#include "common.cuh"` removed (NVRTC gets no include path).
pub fn program() -> String {
    let mut out =
        String::with_capacity(COMMON.len() + FILES.iter().map(|f| f.1.len()).sum::<usize>());
    out.push_str(COMMON);
    for (name, text) in FILES {
        out.push_str(&format!("\n// ---- {name} ----\n"));
        for line in text.lines() {
            if line.trim() == "#include \"common.cuh\"" {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every kernel the program defines (`extern "C" __global__` functions, macro-made ones
/// expanded by their type list).
pub fn kernel_names() -> Vec<String> {
    let mut names = Vec::new();
    for (_, text) in FILES {
        let flat = text.replace("\\\n", " ");
        for stmt in flat.split("extern \"C\" __global__").skip(1) {
            let mut rest = stmt.trim_start();
            rest = rest.strip_prefix("void").unwrap_or(rest).trim_start();
            if let Some(r) = rest.strip_prefix("__launch_bounds__") {
                rest = r.split_once(')').map_or("", |x| x.1).trim_start();
            }
            let name = rest.split('(').next().unwrap_or("").trim().to_string();
            if name.contains("##") {
                let (prefix, _) = name.split_once("##").unwrap_or((&name, ""));
                for line in text.lines() {
                    if let Some(rest) = line.strip_prefix("FOR_TYPE(")
                        && let Some((ty, _)) = rest.split_once(',')
                    {
                        names.push(format!("{prefix}{ty}"));
                    }
                }
            } else if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_holds_every_kernel_the_backend_launches() {
        let names = kernel_names();
        for n in [
            "gemv_q4_k",
            "dequant_bf16_q6_k",
            "embed_q8_0",
            "f32_to_bf16",
            "rms_norm",
            "rms_norm_inplace",
            "rope",
            "swiglu",
            "add_assign",
            "add_bias",
            "gather_rows",
            "kv_write",
            "attention",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        let p = program();
        assert_eq!(p.matches("typedef unsigned char u8;").count(), 1);
        assert!(!p.contains("#include \"common.cuh\""));
    }
}
