//! `synth-gguf SHAPE TYPE OUT`: writes a model of a real model's shape with random weights,
//! streamed to disk, for benchmarks on a machine the real weights cannot be carried to
//! (the GPU suite writes a Llama-3-8B-shaped model of 5 or 16 GB where it runs).
//!
//! SHAPE: `llama3-8b` (32 layers, 4096 wide, 8 KV heads, 14336 FFN, 128256 tokens) or
//! `tiny` (2 layers, 512 wide, for checking the tool itself). TYPE: `q4_k` (matrices Q4_K, the output Q6_K, as llama.cpp's Q4_K_M
//! mostly is) or `bf16`. Values are random with sane block scales (no NaN, no zeros); one
//! layer's bytes are generated and written for every layer (the GPU still reads distinct
//! copies). The tokenizer is byte-level BPE with the 256 byte tokens and no merges, the
//! rest of the vocabulary fillers: enough for `oasis bench`, which runs on token ids.

use std::io::Write;

struct Shape {
    layers: u64,
    d: u64,
    heads: u64,
    kv_heads: u64,
    ffn: u64,
    vocab: u64,
    ctx: u64,
    rope_base: f32,
}

const LLAMA3_8B: Shape = Shape {
    layers: 32,
    d: 4096,
    heads: 32,
    kv_heads: 8,
    ffn: 14336,
    vocab: 128_256,
    ctx: 8192,
    rope_base: 500_000.0,
};

const TINY: Shape = Shape {
    layers: 2,
    d: 512,
    heads: 8,
    kv_heads: 2,
    ffn: 1536,
    vocab: 1024,
    ctx: 4096,
    rope_base: 10_000.0,
};

/// GPT-2's byte-to-character table (printable bytes stand for themselves, the others
/// for characters from U+0100 on).
fn byte_tokens() -> Vec<String> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).map(String::from).unwrap_or_default()
        })
        .collect()
}

/// ggml type ids and block geometry.
#[derive(Clone, Copy)]
enum Ty {
    F32,
    Bf16,
    Q4K,
    Q6K,
}

impl Ty {
    fn id(self) -> u32 {
        match self {
            Ty::F32 => 0,
            Ty::Bf16 => 30,
            Ty::Q4K => 12,
            Ty::Q6K => 14,
        }
    }
    fn bytes(self, elems: u64) -> u64 {
        match self {
            Ty::F32 => elems * 4,
            Ty::Bf16 => elems * 2,
            Ty::Q4K => elems / 256 * 144,
            Ty::Q6K => elems / 256 * 210,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// f16 bits of a small positive scale (2^-12 .. 2^-7).
fn scale_bits(r: &mut Rng) -> [u8; 2] {
    let exp = 3 + (r.next() % 5) as u16;
    let man = (r.next() % 1024) as u16;
    ((exp << 10) | man).to_le_bytes()
}

fn random_bytes(ty: Ty, elems: u64, r: &mut Rng) -> Vec<u8> {
    let n = ty.bytes(elems) as usize;
    let mut out = Vec::with_capacity(n);
    match ty {
        Ty::F32 => {
            for _ in 0..elems {
                out.extend((1.0 + 0.1 * r.unit()).to_le_bytes());
            }
        }
        Ty::Bf16 => {
            for _ in 0..elems {
                let v = 0.02 * r.unit();
                out.extend(((v.to_bits() >> 16) as u16).to_le_bytes());
            }
        }
        Ty::Q4K | Ty::Q6K => {
            out.resize(n, 0);
            for b in out.iter_mut() {
                *b = r.next() as u8;
            }
            let (block, scales): (usize, &[usize]) = match ty {
                Ty::Q4K => (144, &[0, 2]),
                _ => (210, &[208]),
            };
            for b in out.chunks_exact_mut(block) {
                for &at in scales {
                    b[at..at + 2].copy_from_slice(&scale_bits(r));
                }
            }
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn meta_u32(out: &mut Vec<u8>, key: &str, v: u32) {
    put_str(out, key);
    out.extend(4u32.to_le_bytes());
    out.extend(v.to_le_bytes());
}

fn meta_f32(out: &mut Vec<u8>, key: &str, v: f32) {
    put_str(out, key);
    out.extend(6u32.to_le_bytes());
    out.extend(v.to_le_bytes());
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: synth-gguf llama3-8b|tiny q4_k|bf16 OUT".into());
    }
    let s = match args[1].as_str() {
        "llama3-8b" => LLAMA3_8B,
        "tiny" => TINY,
        other => return Err(format!("unknown shape `{other}`")),
    };
    let (mat, out_ty) = match args[2].as_str() {
        "q4_k" => (Ty::Q4K, Ty::Q6K),
        "bf16" => (Ty::Bf16, Ty::Bf16),
        other => return Err(format!("unknown type `{other}`")),
    };
    let head = s.d / s.heads;
    let kv = head * s.kv_heads;
    // (name, dims as ggml writes them: columns first, type)
    let mut tensors: Vec<(String, Vec<u64>, Ty)> = vec![
        ("token_embd.weight".into(), vec![s.d, s.vocab], mat),
        ("output_norm.weight".into(), vec![s.d], Ty::F32),
        ("output.weight".into(), vec![s.d, s.vocab], out_ty),
    ];
    for l in 0..s.layers {
        let p = |n: &str| format!("blk.{l}.{n}.weight");
        tensors.extend([
            (p("attn_norm"), vec![s.d], Ty::F32),
            (p("attn_q"), vec![s.d, s.d], mat),
            (p("attn_k"), vec![s.d, kv], mat),
            (p("attn_v"), vec![s.d, kv], mat),
            (p("attn_output"), vec![s.d, s.d], mat),
            (p("ffn_norm"), vec![s.d], Ty::F32),
            (p("ffn_gate"), vec![s.d, s.ffn], mat),
            (p("ffn_up"), vec![s.d, s.ffn], mat),
            (p("ffn_down"), vec![s.ffn, s.d], mat),
        ]);
    }
    let mut h = b"GGUF".to_vec();
    h.extend(3u32.to_le_bytes());
    h.extend((tensors.len() as u64).to_le_bytes());
    h.extend(12u64.to_le_bytes());
    put_str(&mut h, "general.architecture");
    h.extend(8u32.to_le_bytes());
    put_str(&mut h, "llama");
    let n = |v: u64| u32::try_from(v).map_err(|_| "shape too large".to_string());
    meta_u32(&mut h, "llama.block_count", n(s.layers)?);
    meta_u32(&mut h, "llama.embedding_length", n(s.d)?);
    meta_u32(&mut h, "llama.feed_forward_length", n(s.ffn)?);
    meta_u32(&mut h, "llama.attention.head_count", n(s.heads)?);
    meta_u32(&mut h, "llama.attention.head_count_kv", n(s.kv_heads)?);
    meta_u32(&mut h, "llama.context_length", n(s.ctx)?);
    meta_f32(&mut h, "llama.rope.freq_base", s.rope_base);
    meta_f32(&mut h, "llama.attention.layer_norm_rms_epsilon", 1e-5);
    put_str(&mut h, "tokenizer.ggml.model");
    h.extend(8u32.to_le_bytes());
    put_str(&mut h, "gpt2");
    put_str(&mut h, "tokenizer.ggml.tokens");
    h.extend(9u32.to_le_bytes());
    h.extend(8u32.to_le_bytes());
    h.extend(s.vocab.to_le_bytes());
    let bytes = byte_tokens();
    for i in 0..s.vocab {
        match bytes.get(i as usize) {
            Some(t) => put_str(&mut h, t),
            None => put_str(&mut h, &format!("<|synthetic_{i}|>")),
        }
    }
    meta_u32(&mut h, "tokenizer.ggml.eos_token_id", n(s.vocab - 1)?);
    let mut offset = 0u64;
    for (name, dims, ty) in &tensors {
        put_str(&mut h, name);
        h.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            h.extend(d.to_le_bytes());
        }
        h.extend(ty.id().to_le_bytes());
        h.extend(offset.to_le_bytes());
        offset += ty.bytes(dims.iter().product()).next_multiple_of(32);
    }
    h.resize(h.len().next_multiple_of(32), 0);
    let file = std::fs::File::create(&args[3]).map_err(|e| format!("{}: {e}", args[3]))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&h).map_err(|e| e.to_string())?;
    // One random blob per (type, size), reused for every layer.
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut blobs: Vec<((u32, u64), Vec<u8>)> = Vec::new();
    for (_, dims, ty) in &tensors {
        let elems: u64 = dims.iter().product();
        let key = (ty.id(), elems);
        if !blobs.iter().any(|(k, _)| *k == key) {
            blobs.push((key, random_bytes(*ty, elems, &mut rng)));
        }
        let Some((_, blob)) = blobs.iter().find(|(k, _)| *k == key) else {
            return Err("internal: blob missing".into());
        };
        w.write_all(blob).map_err(|e| e.to_string())?;
        let pad = blob.len().next_multiple_of(32) - blob.len();
        w.write_all(&vec![0u8; pad]).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    println!(
        "{}: {} {} with random weights, {} bytes",
        args[3],
        args[1],
        args[2],
        h.len() as u64 + offset
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("synth-gguf: {e}");
        std::process::exit(2);
    }
}
