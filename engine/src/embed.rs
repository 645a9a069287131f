//! Text embeddings with BERT-family encoders in the sentence-transformers layout
//! (all-MiniLM-L6-v2 and its kin): `config.json` + `model.safetensors` + `tokenizer.json`,
//! and the sentence-transformers modules (`modules.json`, the pooling config, `Normalize`,
//! `sentence_bert_config.json`'s `max_seq_length`).
//!
//! The tokenizer is Hugging Face's own `tokenizers` library reading `tokenizer.json` (BERT's
//! normalizer, pre-tokenizer, WordPiece and `[CLS] ... [SEP]`). The encoder's products run
//! on `kernels::gemm` (the `gemm` crate's SIMD kernels on the thread pool): every text of a
//! batch is one run of rows through the same products (Q, K and V as one), attention within
//! each text, then mean (or CLS) pooling and L2 normalisation as the model's modules say.

use std::path::{Path, PathBuf};

use kernels::ThreadPool;
use kernels::gemm::{Activation, PackedNt, matmul_packed_nt};
use serde_json::Value;

use crate::error::{EngineError, Result};
use crate::safetensors::{Checkpoint, Dtype};

fn bad(path: &Path, problem: impl Into<String>) -> EngineError {
    EngineError::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// A dense layer: weight rows (`out x in`, as PyTorch stores them), bias.
struct Dense {
    weight: Vec<f32>,
    rows: usize,
    cols: usize,
    bias: Vec<f32>,
}

/// Dense layers with one input, stacked into one (their outputs side by side).
fn stack(parts: Vec<Dense>) -> Dense {
    let cols = parts.first().map_or(0, |d| d.cols);
    let mut out = Dense {
        weight: Vec::new(),
        rows: 0,
        cols,
        bias: Vec::new(),
    };
    for d in parts {
        out.weight.extend(d.weight);
        out.bias.extend(d.bias);
        out.rows += d.rows;
    }
    out
}

impl Dense {
    /// The layer as the encoder runs it: weights and bias packed once for the products.
    fn pack(self) -> Result<PackedNt> {
        Ok(PackedNt::new(&self.weight, self.rows, self.cols)?.with_bias(&self.bias)?)
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: one product gives all three.
    qkv: PackedNt,
    attn_out: PackedNt,
    attn_norm: Norm,
    intermediate: PackedNt,
    output: PackedNt,
    out_norm: Norm,
}

/// A loaded embedding model.
pub struct Embedder {
    dir: PathBuf,
    tokenizer: tokenizers::Tokenizer,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    eps: f32,
    max_positions: usize,
    max_tokens: usize,
    pooling: Pooling,
    normalize: bool,
    pool: ThreadPool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("dimensions", &self.hidden)
            .field("layers", &self.layers.len())
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

/// One batch's vectors and how many tokens each text took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: Vec<usize>,
}

/// Whether `dir` holds an encoder this module serves (a BERT `config.json` with a
/// `tokenizer.json` beside it).
pub fn is_embedding_model(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(config) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    config["model_type"].as_str() == Some("bert") && dir.join("tokenizer.json").is_file()
}

/// The model's token limit: `sentence_bert_config.json`'s `max_seq_length`, at most its
/// position count.
fn max_tokens(dir: &Path, max_positions: usize) -> Result<usize> {
    let st_config = dir.join("sentence_bert_config.json");
    Ok(if st_config.is_file() {
        read_json(&st_config)?["max_seq_length"]
            .as_u64()
            .map_or(max_positions, |v| v as usize)
    } else {
        max_positions
    }
    .min(max_positions))
}

/// What a catalog record says of an encoder, read without loading its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderInfo {
    /// Weights in the checkpoint.
    pub parameters: u64,
    /// Tokens per text, at most.
    pub max_tokens: usize,
}

/// Reads `dir`'s config, checkpoint header and token limit (not the weights: the daemon
/// loads them when it serves the model).
pub fn inspect(dir: &Path) -> Result<EncoderInfo> {
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let max_positions = usize_of(&config, "max_position_embeddings", &config_path)?;
    let ck = Checkpoint::open(dir)?;
    let parameters = ck
        .names()
        .filter_map(|n| ck.tensor(n))
        .map(|t| t.n_elements() as u64)
        .sum();
    Ok(EncoderInfo {
        parameters,
        max_tokens: max_tokens(dir, max_positions)?,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    crate::safetensors::read_json(path)
}

fn usize_of(config: &Value, key: &str, path: &Path) -> Result<usize> {
    config[key]
        .as_u64()
        .filter(|&v| v > 0 && v < 1 << 20)
        .map(|v| v as usize)
        .ok_or_else(|| bad(path, format!("`{key}` must be a positive integer")))
}

/// A tensor as f32 values (F32, F16 or BF16), checked against `shape`.
fn tensor(ck: &Checkpoint, prefix: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let full = format!("{prefix}{name}");
    let t = ck
        .tensor(&full)
        .ok_or_else(|| bad(ck.dir(), format!("the tensor `{full}` is missing")))?;
    if t.shape != shape {
        return Err(bad(
            ck.dir(),
            format!("`{full}` has shape {:?}; expected {shape:?}", t.shape),
        ));
    }
    let data = ck.data(t);
    let values: Vec<f32> = match t.dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(
                ck.dir(),
                format!(
                    "`{full}` is {}; embeddings take F32, F16 or BF16",
                    other.name()
                ),
            ));
        }
    };
    Ok(values)
}

fn dense(ck: &Checkpoint, prefix: &str, name: &str, rows: usize, cols: usize) -> Result<PackedNt> {
    dense_raw(ck, prefix, name, rows, cols)?.pack()
}

fn dense_raw(ck: &Checkpoint, prefix: &str, name: &str, rows: usize, cols: usize) -> Result<Dense> {
    let w = tensor(ck, prefix, &format!("{name}.weight"), &[rows, cols])?;
    Ok(Dense {
        weight: w,
        rows,
        cols,
        bias: tensor(ck, prefix, &format!("{name}.bias"), &[rows])?,
    })
}

fn norm(ck: &Checkpoint, prefix: &str, name: &str, hidden: usize) -> Result<Norm> {
    Ok(Norm {
        weight: tensor(ck, prefix, &format!("{name}.weight"), &[hidden])?,
        bias: tensor(ck, prefix, &format!("{name}.bias"), &[hidden])?,
    })
}

impl Embedder {
    /// Loads the model in `dir` to run on `threads` threads.
    pub fn open(dir: &Path, threads: usize) -> Result<Embedder> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        if config["model_type"].as_str() != Some("bert") {
            return Err(bad(
                &config_path,
                "not a BERT encoder (`model_type` is not `bert`)",
            ));
        }
        match config["hidden_act"].as_str() {
            Some("gelu") | None => {}
            Some(other) => {
                return Err(bad(
                    &config_path,
                    format!("`hidden_act` `{other}` is not supported (gelu is)"),
                ));
            }
        }
        if config["position_embedding_type"]
            .as_str()
            .is_some_and(|p| p != "absolute")
        {
            return Err(bad(
                &config_path,
                "only absolute position embeddings are supported",
            ));
        }
        let hidden = usize_of(&config, "hidden_size", &config_path)?;
        let heads = usize_of(&config, "num_attention_heads", &config_path)?;
        let n_layers = usize_of(&config, "num_hidden_layers", &config_path)?;
        let inter = usize_of(&config, "intermediate_size", &config_path)?;
        let vocab = usize_of(&config, "vocab_size", &config_path)?;
        let max_positions = usize_of(&config, "max_position_embeddings", &config_path)?;
        let types = usize_of(&config, "type_vocab_size", &config_path).unwrap_or(2);
        let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        if hidden % heads != 0 {
            return Err(bad(
                &config_path,
                "`hidden_size` is not a multiple of `num_attention_heads`",
            ));
        }

        let ck = Checkpoint::open(dir)?;
        let prefix = if ck.tensor("embeddings.word_embeddings.weight").is_some() {
            ""
        } else {
            "bert."
        };
        let word = tensor(
            &ck,
            prefix,
            "embeddings.word_embeddings.weight",
            &[vocab, hidden],
        )?;
        let position = tensor(
            &ck,
            prefix,
            "embeddings.position_embeddings.weight",
            &[max_positions, hidden],
        )?;
        let token_type = tensor(
            &ck,
            prefix,
            "embeddings.token_type_embeddings.weight",
            &[types, hidden],
        )?;
        let embed_norm = norm(&ck, prefix, "embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let l = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: stack(vec![
                    dense_raw(
                        &ck,
                        prefix,
                        &format!("{l}.attention.self.query"),
                        hidden,
                        hidden,
                    )?,
                    dense_raw(
                        &ck,
                        prefix,
                        &format!("{l}.attention.self.key"),
                        hidden,
                        hidden,
                    )?,
                    dense_raw(
                        &ck,
                        prefix,
                        &format!("{l}.attention.self.value"),
                        hidden,
                        hidden,
                    )?,
                ])
                .pack()?,
                attn_out: dense(
                    &ck,
                    prefix,
                    &format!("{l}.attention.output.dense"),
                    hidden,
                    hidden,
                )?,
                attn_norm: norm(
                    &ck,
                    prefix,
                    &format!("{l}.attention.output.LayerNorm"),
                    hidden,
                )?,
                intermediate: dense(
                    &ck,
                    prefix,
                    &format!("{l}.intermediate.dense"),
                    inter,
                    hidden,
                )?,
                output: dense(&ck, prefix, &format!("{l}.output.dense"), hidden, inter)?,
                out_norm: norm(&ck, prefix, &format!("{l}.output.LayerNorm"), hidden)?,
            });
        }

        // The sentence-transformers modules: pooling, normalisation, the token limit.
        let (mut pooling, mut normalize) = (Pooling::Mean, false);
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules = read_json(&modules_path)?;
            for m in modules.as_array().into_iter().flatten() {
                let kind = m["type"].as_str().unwrap_or("");
                if kind.ends_with(".Normalize") {
                    normalize = true;
                } else if kind.ends_with(".Pooling") {
                    // The module's folder, inside the model's own (an imported model's
                    // modules.json must not make the daemon read elsewhere).
                    let sub = Path::new(m["path"].as_str().unwrap_or(""));
                    if !sub
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(bad(
                            &modules_path,
                            format!(
                                "the pooling module's path `{}` is not a folder inside the model",
                                sub.display()
                            ),
                        ));
                    }
                    let p = dir.join(sub).join("config.json");
                    let cfg = read_json(&p)?;
                    pooling = if cfg["pooling_mode_mean_tokens"].as_bool() == Some(true) {
                        Pooling::Mean
                    } else if cfg["pooling_mode_cls_token"].as_bool() == Some(true) {
                        Pooling::Cls
                    } else {
                        return Err(bad(&p, "only mean and CLS pooling are supported"));
                    };
                }
            }
        }
        let max_tokens = max_tokens(dir, max_positions)?;

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| bad(&tok_path, format!("cannot read the tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| bad(&tok_path, format!("cannot set the truncation: {e}")))?;
        Ok(Embedder {
            dir: dir.to_path_buf(),
            tokenizer,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            hidden,
            heads,
            eps,
            max_positions,
            max_tokens,
            pooling,
            normalize,
            pool: ThreadPool::new(threads.max(1)),
        })
    }

    /// The vectors' length.
    pub fn dimensions(&self) -> usize {
        self.hidden
    }

    /// Tokens per text, at most (longer texts are cut, as sentence-transformers cuts them).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The token ids of `text`, `[CLS]` and `[SEP]` included, cut to the limit.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EngineError::InvalidRequest(format!("cannot tokenize the text: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_positions {
            return Err(EngineError::InvalidRequest(format!(
                "the text is {} tokens; at most {}",
                ids.len(),
                self.max_positions
            )));
        }
        Ok(ids)
    }

    /// Embeds a batch of token sequences (from [`Embedder::tokenize`]).
    pub fn embed_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let total: usize = batch.iter().map(Vec::len).sum();
        let mut x = vec![0f32; total * h];
        let mut row = 0;
        for ids in batch {
            for (pos, &id) in ids.iter().enumerate() {
                let id = id as usize;
                let (Some(w), Some(p)) = (
                    self.word.get(id * h..(id + 1) * h),
                    self.position.get(pos * h..(pos + 1) * h),
                ) else {
                    return Err(EngineError::InvalidRequest(format!(
                        "token id {id} or position {pos} is outside the model"
                    )));
                };
                let out = &mut x[row * h..(row + 1) * h];
                for i in 0..h {
                    out[i] = w[i] + p[i] + self.token_type[i];
                }
                layer_norm(out, &self.embed_norm, self.eps);
                row += 1;
            }
        }
        let spans: Vec<(usize, usize)> = batch
            .iter()
            .scan(0, |start, ids| {
                let s = *start;
                *start += ids.len();
                Some((s, ids.len()))
            })
            .collect();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        // Each row's text, for attention.
        let row_span: Vec<(usize, usize)> = spans
            .iter()
            .flat_map(|&sp| std::iter::repeat_n(sp, sp.1))
            .collect();
        let inter_width = self.layers.first().map_or(0, |l| l.intermediate.rows());
        let mut inter = vec![0f32; total * inter_width];
        for layer in &self.layers {
            self.project(&x, &layer.qkv, Activation::None, &mut qkv, total)?;
            self.par_rows(&mut ctx, h, &|first, rows| {
                self.attention(&qkv, &row_span, first, rows);
            });
            self.project(&ctx, &layer.attn_out, Activation::None, &mut tmp, total)?;
            self.par_rows(&mut x, h, &|first, rows| {
                add_and_norm(rows, &tmp[first * h..], &layer.attn_norm, self.eps);
            });
            self.project(&x, &layer.intermediate, Activation::Gelu, &mut inter, total)?;
            self.project(&inter, &layer.output, Activation::None, &mut tmp, total)?;
            self.par_rows(&mut x, h, &|first, rows| {
                add_and_norm(rows, &tmp[first * h..], &layer.out_norm, self.eps);
            });
        }
        let mut out = Vec::with_capacity(batch.len());
        for &(start, len) in &spans {
            let mut pooled = vec![0f64; h];
            let rows = match self.pooling {
                Pooling::Mean => start..start + len,
                Pooling::Cls => start..start + len.min(1),
            };
            let n = rows.len().max(1) as f64;
            for r in rows {
                for (p, &xv) in pooled.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                    *p += f64::from(xv);
                }
            }
            let mut vector: Vec<f64> = pooled.iter().map(|p| p / n).collect();
            if self.normalize {
                let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                for value in &mut vector {
                    *value /= norm;
                }
            }
            out.push(vector.into_iter().map(|v| v as f32).collect());
        }
        Ok(out)
    }

    /// Embeds `texts`.
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        let batch = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let tokens = batch.iter().map(Vec::len).collect();
        Ok(Embeddings {
            vectors: self.embed_ids(&batch)?,
            tokens,
        })
    }

    /// `out = input W^T + b` for `rows` rows.
    fn project(
        &self,
        input: &[f32],
        dense: &PackedNt,
        act: Activation,
        out: &mut [f32],
        rows: usize,
    ) -> Result<()> {
        Ok(matmul_packed_nt(&self.pool, input, rows, dense, act, out)?)
    }

    /// Runs `f(first_row, rows)` over `data` (rows of `width`) in contiguous pieces of
    /// whole rows, one or two per thread of the pool.
    fn par_rows(&self, data: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let rows = data.len() / width.max(1);
        if rows == 0 {
            return;
        }
        let pieces = (self.pool.threads() * 2).min(rows).max(1);
        let per = rows.div_ceil(pieces);
        // Each piece behind its own lock: every task takes only its own, so none waits.
        let chunks: Vec<std::sync::Mutex<&mut [f32]>> = data
            .chunks_mut(per * width)
            .map(std::sync::Mutex::new)
            .collect();
        self.pool.run(chunks.len(), &|i| {
            if let Some(chunk) = chunks.get(i)
                && let Ok(mut rows) = chunk.lock()
            {
                f(i * per, &mut rows);
            }
        });
    }

    /// Full (bidirectional) attention within each text's rows, for rows `first..` (as many
    /// as `ctx` holds); `qkv` holds each row's query, key and value side by side and
    /// `row_span` each row's text (its first row and length).
    fn attention(&self, qkv: &[f32], row_span: &[(usize, usize)], first: usize, ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let s3 = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = Vec::new();
        for (n, out_row) in ctx.chunks_exact_mut(h).enumerate() {
            let i = first + n;
            let Some(&(start, len)) = row_span.get(i) else {
                return;
            };
            for head in 0..self.heads {
                let off = head * d;
                let qi = &qkv[i * s3 + off..i * s3 + off + d];
                scores.clear();
                scores.extend((start..start + len).map(|j| {
                    kernels::attention_rows::dot(qi, &qkv[j * s3 + h + off..j * s3 + h + off + d])
                        * scale
                }));
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let out = &mut out_row[off..off + d];
                out.fill(0.0);
                for (j, s) in (start..start + len).zip(&scores) {
                    let p = s / sum;
                    let vj = &qkv[j * s3 + 2 * h + off..j * s3 + 2 * h + off + d];
                    for (o, vv) in out.iter_mut().zip(vj) {
                        *o += p * vv;
                    }
                }
            }
        }
    }
}

/// `x += add` row by row, then each row layer-normed.
fn add_and_norm(x: &mut [f32], add: &[f32], n: &Norm, eps: f32) {
    for (xi, ai) in x.iter_mut().zip(add) {
        *xi += ai;
    }
    for r in x.chunks_exact_mut(n.weight.len()) {
        layer_norm(r, n, eps);
    }
}

fn layer_norm(x: &mut [f32], n: &Norm, eps: f32) {
    let len = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / len;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    for ((v, w), b) in x.iter_mut().zip(&n.weight).zip(&n.bias) {
        *v = ((f64::from(*v) - mean) * inv) as f32 * w + b;
    }
}
