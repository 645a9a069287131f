//! A dense GGUF model on a GPU: its weights copied to the device once, its key/value cache
//! there, and the [`DenseOps`] of the forward pass as CUDA kernels.
//!
//! The host keeps the scheduler's bookkeeping (block tables, prefix hashes, positions); per
//! step it uploads the batch's token ids, positions, cache slots and block tables, and it
//! downloads only the logits.

use kernels::AttnShape;
use kernels::cuda::{CudaDevice, Floats, Ids, KvCache, MatmulScratch, RopeTable, Weight};
use kernels::ops::RopeStyle;

use super::forward::{BatchSeq, DenseOps, LayerMat, LayerNorm, Layout, Role, width};
use super::kv_cache::{BLOCK_POSITIONS, KvPool};
use super::{Model, ModelConfig};
use crate::error::{EngineError, Result};

fn dev_err(e: kernels::KernelError) -> EngineError {
    match e {
        kernels::KernelError::Unavailable(m) => EngineError::Device(m),
        other => EngineError::Device(other.to_string()),
    }
}

/// `values` into `dst` on the GPU, through the reused host buffer `host`.
fn upload(
    dev: &CudaDevice,
    dst: &mut Ids,
    host: &mut Vec<u32>,
    values: impl Iterator<Item = u32>,
) -> Result<()> {
    host.clear();
    host.extend(values);
    dev.write_ids(dst, host).map_err(dev_err)
}

/// One layer's weights on the GPU.
#[derive(Debug)]
struct GpuLayer {
    mats: [Weight; 7],
    attn_norm: Floats,
    ffn_norm: Floats,
    q_norm: Option<Floats>,
    k_norm: Option<Floats>,
    bias: [Option<Floats>; 3],
}

fn mat_index(m: LayerMat) -> usize {
    match m {
        LayerMat::Q => 0,
        LayerMat::K => 1,
        LayerMat::V => 2,
        LayerMat::O => 3,
        LayerMat::Gate => 4,
        LayerMat::Up => 5,
        LayerMat::Down => 6,
    }
}

fn role_index(r: Role) -> usize {
    match r {
        Role::X => 0,
        Role::H => 1,
        Role::Q => 2,
        Role::K => 3,
        Role::V => 4,
        Role::Attn => 5,
        Role::O => 6,
        Role::Gate => 7,
        Role::Up => 8,
    }
}

/// The per-rank GPU state of a dense model: weights, cache, buffers.
#[derive(Debug)]
pub struct CudaExec {
    dev: CudaDevice,
    cfg: ModelConfig,
    embd: Weight,
    layers: Vec<GpuLayer>,
    out_norm: Floats,
    output: Weight,
    rope: RopeTable,
    kv: KvCache,
    kv_blocks: usize,
    qk_norm: bool,
    /// Activation buffers by role; taken out while an operation holds one as input and
    /// another as output.
    bufs: [Option<Floats>; 9],
    head_rows: Floats,
    head_normed: Floats,
    logits_dev: Floats,
    mm: MatmulScratch,
    ids: Ids,
    pos: Ids,
    slots: Ids,
    tables: Ids,
    table_of: Ids,
    logit_rows: Ids,
    /// This step's attention tiles (runs of up to 16 rows of one sequence), on the GPU
    /// when `use_tiles`: a step whose rows are mostly prompt chunks.
    tiles: Ids,
    host_tiles: Vec<u32>,
    use_tiles: bool,
    /// Host copies of the per-step metadata, reused.
    host_ids: Vec<u32>,
    host_tables: Vec<u32>,
    host_table_of: Vec<u32>,
    /// The logits of the last step, `rows x vocab`, on the host.
    pub(crate) logits: Vec<f32>,
}

impl CudaExec {
    /// Opens the GPU, copies `model`'s weights to it (refusing, with both figures, weights
    /// larger than its free memory) and makes a cache of as many blocks as `kv_blocks`
    /// gives for the memory then free.
    pub fn new(
        model: &Model,
        info: &kernels::cuda::DeviceInfo,
        kernel_cache: Option<&std::path::Path>,
        kv_blocks: impl FnOnce(u64) -> Result<usize>,
    ) -> Result<CudaExec> {
        let Some((file, w)) = model.gguf() else {
            return Err(EngineError::Device(
                "only GGUF models run on the GPU so far".into(),
            ));
        };
        if let Some(why) = crate::device::gpu_obstacle(model) {
            return Err(EngineError::Device(why));
        }
        let dev = CudaDevice::open(info.ordinal, kernel_cache).map_err(dev_err)?;
        let free = dev.memory_free().map_err(dev_err)?;
        if model.weight_bytes() > free {
            return Err(EngineError::Device(format!(
                "the model's weights need {} bytes; {} has {free} bytes free",
                model.weight_bytes(),
                dev.info().describe()
            )));
        }
        let cfg = model.config.clone();
        let up_mat = |m: &super::weights::Mat| -> Result<Weight> {
            dev.upload_weight(m.ty, m.rows, m.cols, m.bytes(file))
                .map_err(|e| EngineError::Device(format!("{}: {e}", m.name)))
        };
        let up = |v: &[f32]| dev.upload_floats(v).map_err(dev_err);
        let up_opt = |v: Option<&Vec<f32>>| -> Result<Option<Floats>> {
            v.map(|v| dev.upload_floats(v).map_err(dev_err)).transpose()
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            layers.push(GpuLayer {
                mats: [
                    up_mat(&l.wq)?,
                    up_mat(&l.wk)?,
                    up_mat(&l.wv)?,
                    up_mat(&l.wo)?,
                    up_mat(&l.w_gate)?,
                    up_mat(&l.w_up)?,
                    up_mat(&l.w_down)?,
                ],
                attn_norm: up(&l.attn_norm)?,
                ffn_norm: up(&l.ffn_norm)?,
                q_norm: up_opt(l.q_norm.as_ref())?,
                k_norm: up_opt(l.k_norm.as_ref())?,
                bias: [
                    up_opt(l.bq.as_ref())?,
                    up_opt(l.bk.as_ref())?,
                    up_opt(l.bv.as_ref())?,
                ],
            });
        }
        let embd = up_mat(&w.tok_embd)?;
        let output = up_mat(&w.output)?;
        let out_norm = up(&w.output_norm)?;
        let r = &cfg.rope;
        let rope = dev
            .rope_table(
                r.n_rot,
                r.freq_base,
                r.freq_scale,
                r.freq_factors.as_deref(),
                r.style == RopeStyle::Neox,
            )
            .map_err(dev_err)?;
        let kv_blocks = kv_blocks(dev.memory_free().map_err(dev_err)?)?;
        let kv = dev
            .kv_cache(cfg.n_layers, kv_blocks, cfg.kv_dim())
            .map_err(dev_err)?;
        let floats = || dev.floats(1).map_err(dev_err);
        let ids = || dev.ids().map_err(dev_err);
        let bufs = [
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
            Some(floats()?),
        ];
        Ok(CudaExec {
            qk_norm: super::forward::has_qk_norm(w),
            head_rows: floats()?,
            head_normed: floats()?,
            logits_dev: floats()?,
            mm: dev.matmul_scratch(),
            ids: ids()?,
            pos: ids()?,
            slots: ids()?,
            tables: ids()?,
            table_of: ids()?,
            logit_rows: ids()?,
            tiles: ids()?,
            host_tiles: Vec::new(),
            use_tiles: false,
            host_ids: Vec::new(),
            host_tables: Vec::new(),
            host_table_of: Vec::new(),
            logits: Vec::new(),
            bufs,
            kv,
            kv_blocks,
            rope,
            out_norm,
            output,
            embd,
            layers,
            cfg,
            dev,
        })
    }

    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Blocks in the GPU's cache.
    pub fn kv_blocks(&self) -> usize {
        self.kv_blocks
    }

    fn take(&mut self, r: Role) -> Result<Floats> {
        self.bufs[role_index(r)]
            .take()
            .ok_or_else(|| EngineError::Internal(format!("GPU buffer {r:?} in use")))
    }

    fn put(&mut self, r: Role, f: Floats) {
        self.bufs[role_index(r)] = Some(f);
    }

    fn buf(&self, r: Role) -> Result<&Floats> {
        self.bufs[role_index(r)]
            .as_ref()
            .ok_or_else(|| EngineError::Internal(format!("GPU buffer {r:?} in use")))
    }

    /// Runs the dense forward pass of `seqs` (their blocks already reserved in `kv`, their
    /// rows laid out in `l`), leaving the logits in [`CudaExec::logits`].
    pub(crate) fn forward(
        &mut self,
        kv: &mut KvPool,
        seqs: &mut [BatchSeq<'_>],
        l: &Layout<'_>,
    ) -> Result<usize> {
        let n_layers = self.layers.len();
        let qk = self.qk_norm;
        super::forward::dense_forward(self, n_layers, qk, kv, seqs, l)
    }

    /// The step's inputs to the GPU: token ids, positions, cache slots, block tables,
    /// attention tiles and the rows whose logits are wanted.
    fn upload_step(&mut self, seqs: &[BatchSeq<'_>], l: &Layout<'_>) -> Result<()> {
        let tokens = seqs.iter().flat_map(|q| q.tokens.iter().copied());
        upload(&self.dev, &mut self.ids, &mut self.host_ids, tokens)?;
        let positions = l.row_pos.iter().map(|&p| p as u32);
        upload(&self.dev, &mut self.pos, &mut self.host_ids, positions)?;
        self.host_ids.clear();
        for t in 0..l.tokens {
            let (s, p) = (l.row_seq[t], l.row_pos[t]);
            let table = seqs[s].kv.table();
            let block = *table
                .get(p / BLOCK_POSITIONS)
                .ok_or_else(|| EngineError::Internal(format!("position {p} has no cache block")))?;
            self.host_ids
                .push(block * BLOCK_POSITIONS as u32 + (p % BLOCK_POSITIONS) as u32);
        }
        self.dev
            .write_ids(&mut self.slots, &self.host_ids)
            .map_err(dev_err)?;
        self.host_tables.clear();
        let mut offsets = Vec::with_capacity(seqs.len());
        for q in seqs.iter() {
            offsets.push(self.host_tables.len() as u32);
            self.host_tables.extend_from_slice(q.kv.table());
        }
        self.host_table_of.clear();
        self.host_table_of
            .extend(l.row_seq.iter().map(|&s| offsets[s]));
        self.dev
            .write_ids(&mut self.tables, &self.host_tables)
            .map_err(dev_err)?;
        self.dev
            .write_ids(&mut self.table_of, &self.host_table_of)
            .map_err(dev_err)?;
        // Tiles pay when their rows share keys: two rows or more per tile on average.
        kernels::cuda::attention_tiles_of(l.row_seq, &mut self.host_tiles);
        self.use_tiles = self.host_tiles.len() * 2 <= l.tokens
            && self.cfg.head_dim <= kernels::cuda::ATTN_TILED_MAX_HEAD_DIM
            && self.cfg.head_dim.is_multiple_of(2);
        if self.use_tiles {
            self.dev
                .write_ids(&mut self.tiles, &self.host_tiles)
                .map_err(dev_err)?;
        }
        let wanted = l.logit_rows.iter().map(|&r| r as u32);
        upload(&self.dev, &mut self.logit_rows, &mut self.host_ids, wanted)
    }

    fn download_logits(&mut self, rows: usize) -> Result<()> {
        self.dev
            .download(
                &self.logits_dev,
                rows * self.cfg.vocab_size,
                &mut self.logits,
            )
            .map_err(dev_err)
    }
}

impl DenseOps for CudaExec {
    fn embed(&mut self, seqs: &[BatchSeq<'_>], l: &Layout<'_>) -> Result<()> {
        self.upload_step(seqs, l)?;
        let mut x = self.take(Role::X)?;
        let r = self
            .dev
            .embed(&self.embd, &self.ids, l.tokens, &mut x)
            .map_err(dev_err);
        self.put(Role::X, x);
        r
    }

    fn norm(
        &mut self,
        layer: usize,
        norm: LayerNorm,
        src: Role,
        dst: Role,
        l: &Layout<'_>,
    ) -> Result<()> {
        // Fields borrowed one by one: the weights stay borrowed while buffers move.
        let lw = &self.layers[layer];
        let w = match norm {
            LayerNorm::Attn => Some(&lw.attn_norm),
            LayerNorm::Ffn => Some(&lw.ffn_norm),
            LayerNorm::QHeads => lw.q_norm.as_ref(),
            LayerNorm::KHeads => lw.k_norm.as_ref(),
        };
        let Some(w) = w else { return Ok(()) };
        let n = w.len();
        let rows = l.tokens * width(&self.cfg, src) / n.max(1);
        let eps = self.cfg.rms_eps;
        let bufs = &mut self.bufs;
        let missing = || EngineError::Internal("GPU buffer in use".into());
        if src == dst {
            // In place: each row is read whole before it is written (one block per row).
            let out = bufs[role_index(dst)].as_mut().ok_or_else(missing)?;
            return self
                .dev
                .rms_norm_in_place(out, w, rows, n, eps)
                .map_err(dev_err);
        }
        let mut out = bufs[role_index(dst)].take().ok_or_else(missing)?;
        let r = match bufs[role_index(src)].as_ref() {
            Some(input) => self
                .dev
                .rms_norm(input, w, rows, n, eps, &mut out)
                .map_err(dev_err),
            None => Err(missing()),
        };
        bufs[role_index(dst)] = Some(out);
        r
    }

    fn project(
        &mut self,
        layer: usize,
        input: Role,
        outs: &[(LayerMat, Role)],
        l: &Layout<'_>,
    ) -> Result<()> {
        let x = self.take(input)?;
        let mut result = Ok(());
        for (m, r) in outs {
            let mut out = match self.take(*r) {
                Ok(o) => o,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let w = &self.layers[layer].mats[mat_index(*m)];
            let rr = self.dev.matmul(w, &x, l.tokens, &mut out, &mut self.mm);
            self.put(*r, out);
            if let Err(e) = rr {
                result = Err(dev_err(e));
                break;
            }
        }
        self.put(input, x);
        result
    }

    fn bias(&mut self, layer: usize, mat: LayerMat, buf: Role, l: &Layout<'_>) -> Result<()> {
        let i = match mat {
            LayerMat::Q => 0,
            LayerMat::K => 1,
            LayerMat::V => 2,
            _ => return Ok(()),
        };
        if self.layers[layer].bias[i].is_none() {
            return Ok(());
        }
        let w = width(&self.cfg, buf);
        let mut x = self.take(buf)?;
        let r = match &self.layers[layer].bias[i] {
            Some(b) => self.dev.add_bias(&mut x, b, l.tokens, w),
            None => Ok(()),
        };
        self.put(buf, x);
        r.map_err(dev_err)
    }

    fn attend(
        &mut self,
        layer: usize,
        _kv: &mut KvPool,
        _seqs: &mut [BatchSeq<'_>],
        l: &Layout<'_>,
    ) -> Result<()> {
        let (hd, n, n_heads, n_kv_heads) = (
            self.cfg.head_dim,
            l.tokens,
            self.cfg.n_heads,
            self.cfg.n_kv_heads,
        );
        let mut q = self.take(Role::Q)?;
        let mut k = self.take(Role::K)?;
        let v = self.take(Role::V)?;
        let mut out = self.take(Role::Attn)?;
        let shape = AttnShape {
            n_heads,
            n_kv_heads,
            head_dim: hd,
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let r = (|| {
            self.dev
                .rope(&mut q, &self.pos, n, n_heads, hd, &self.rope)?;
            self.dev
                .rope(&mut k, &self.pos, n, n_kv_heads, hd, &self.rope)?;
            self.dev
                .kv_write(&mut self.kv, layer, &k, &v, &self.slots, n)?;
            let tiles = self
                .use_tiles
                .then_some((&self.tiles, self.host_tiles.len()));
            self.dev.attention(
                &q,
                &self.kv,
                layer,
                &self.tables,
                &self.table_of,
                &self.pos,
                tiles,
                n,
                shape,
                scale,
                &mut out,
            )
        })();
        self.put(Role::Q, q);
        self.put(Role::K, k);
        self.put(Role::V, v);
        self.put(Role::Attn, out);
        r.map_err(dev_err)
    }

    fn swiglu(&mut self, l: &Layout<'_>) -> Result<()> {
        let n = l.tokens * self.cfg.ffn_dim;
        let mut g = self.take(Role::Gate)?;
        let r = self.dev.swiglu(&mut g, self.buf(Role::Up)?, n);
        self.put(Role::Gate, g);
        r.map_err(dev_err)
    }

    fn residual(&mut self, l: &Layout<'_>) -> Result<()> {
        let n = l.tokens * self.cfg.d_model;
        let mut x = self.take(Role::X)?;
        let r = self.dev.add_assign(&mut x, self.buf(Role::O)?, n);
        self.put(Role::X, x);
        r.map_err(dev_err)
    }

    fn head(&mut self, l: &Layout<'_>) -> Result<usize> {
        let rows = l.logit_rows.len();
        if rows == 0 {
            self.logits.clear();
            return Ok(0);
        }
        let d = self.cfg.d_model;
        let x = self.take(Role::X)?;
        let r = (|| {
            self.dev
                .gather_rows(&x, &self.logit_rows, rows, d, &mut self.head_rows)?;
            self.dev.rms_norm(
                &self.head_rows,
                &self.out_norm,
                rows,
                d,
                self.cfg.rms_eps,
                &mut self.head_normed,
            )?;
            self.dev.matmul(
                &self.output,
                &self.head_normed,
                rows,
                &mut self.logits_dev,
                &mut self.mm,
            )
        })();
        self.put(Role::X, x);
        r.map_err(dev_err)?;
        self.download_logits(rows)?;
        Ok(rows)
    }
}
