//! The CUDA backend proper (feature `cuda`): a GPU's context, stream, cuBLAS handle and
//! compiled kernels, buffers on it, and one method per operation.
//!
//! Every launch is checked; errors come back as [`KernelError::Cuda`] naming the operation.
//! All work goes to one stream in order, so an operation's inputs are ready when it runs and
//! the host only waits where it reads results back ([`CudaDevice::download`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{
    ATTN_TILED_MAX_HEAD_DIM, DeviceInfo, GEMV_MAX_TOKENS, NEEDS_DRIVER_CUDA, OpTime, source,
    type_suffix,
};
use crate::{AttnShape, GgmlType, KernelError};

const GEMV_WARPS: u32 = 4;
/// Weight values dequantized to bf16 at a time for one cuBLAS product (rows are taken in
/// chunks that fit), bounding the scratch a large output head needs.
const DEQUANT_CHUNK_VALUES: usize = 64 << 20;

fn cuda_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda {
        op,
        detail: describe_driver_error(&e),
    }
}

/// The driver's error, with the plain words an operator looks for first.
fn describe_driver_error(e: &cudarc::driver::DriverError) -> String {
    use cudarc::driver::sys::CUresult;
    let plain = match e.0 {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => "the GPU is out of memory",
        CUresult::CUDA_ERROR_ECC_UNCORRECTABLE => "the GPU reported an uncorrectable ECC error",
        CUresult::CUDA_ERROR_LAUNCH_FAILED | CUresult::CUDA_ERROR_ILLEGAL_ADDRESS => {
            "a kernel failed on the GPU (see the driver's Xid in the kernel log)"
        }
        _ => "",
    };
    if plain.is_empty() {
        format!("{e:?}")
    } else {
        format!("{plain} ({e:?})")
    }
}

fn blas_err(op: &'static str) -> impl Fn(cudarc::cublas::result::CublasError) -> KernelError {
    move |e| KernelError::Cuda {
        op,
        detail: format!("{e:?}"),
    }
}

/// The CUDA version the driver supports, read through `cuDriverGetVersion` before cudarc
/// loads the driver (cudarc panics on a symbol the driver lacks; this does not).
fn driver_cuda_version() -> Result<(u32, u32), KernelError> {
    let names = ["libcuda.so.1", "libcuda.so"];
    let lib = names
        .iter()
        .find_map(|n| {
            // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what
            // every CUDA program does; nothing else is called here but the version query.
            unsafe { libloading::Library::new(n) }.ok()
        })
        .ok_or_else(|| {
            KernelError::Unavailable("no NVIDIA driver (libcuda.so.1 not found)".into())
        })?;
    // SAFETY: `cuDriverGetVersion(int*)` is in every CUDA driver since 2.2; the symbol's type
    // is declared exactly.
    let get: libloading::Symbol<'_, unsafe extern "C" fn(*mut i32) -> i32> =
        unsafe { lib.get(b"cuDriverGetVersion\0") }.map_err(|e| {
            KernelError::Unavailable(format!("the NVIDIA driver lacks cuDriverGetVersion: {e}"))
        })?;
    let mut v: i32 = 0;
    // SAFETY: the function writes one int through the pointer, which is valid.
    let rc = unsafe { get(&mut v) };
    if rc != 0 || v <= 0 {
        return Err(KernelError::Unavailable(format!(
            "the NVIDIA driver did not report its CUDA version (error {rc})"
        )));
    }
    Ok(((v / 1000) as u32, ((v % 1000) / 10) as u32))
}

/// Checks the driver and libraries without letting cudarc panic: the driver present and
/// recent enough, NVRTC and cuBLAS loadable.
fn check_libraries() -> Result<(u32, u32), KernelError> {
    // SAFETY: the check only tries to open the library by its candidate names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(KernelError::Unavailable(
            "no NVIDIA driver (libcuda.so.1 not found)".into(),
        ));
    }
    let driver = driver_cuda_version()?;
    if driver < NEEDS_DRIVER_CUDA {
        return Err(KernelError::Unavailable(format!(
            "the NVIDIA driver supports CUDA {}.{}; this build needs {}.{} or newer (update the driver)",
            driver.0, driver.1, NEEDS_DRIVER_CUDA.0, NEEDS_DRIVER_CUDA.1
        )));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(KernelError::Unavailable(
            "NVRTC not found (libnvrtc.so.13: install the CUDA 13 runtime libraries, e.g. the cuda-nvrtc-13 package, or set LD_LIBRARY_PATH)".into(),
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(KernelError::Unavailable(
            "cuBLAS not found (libcublas.so.13: install the CUDA 13 runtime libraries, e.g. the libcublas-13 package, or set LD_LIBRARY_PATH)".into(),
        ));
    }
    Ok(driver)
}

fn info_of(ctx: &Arc<CudaContext>, driver: (u32, u32)) -> Result<DeviceInfo, KernelError> {
    let (major, minor) = ctx.compute_capability().map_err(cuda_err("query"))?;
    let (free, total) = ctx.mem_get_info().map_err(cuda_err("query"))?;
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name().map_err(cuda_err("query"))?,
        compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        memory_total_bytes: total as u64,
        memory_free_bytes: free as u64,
        driver_cuda: driver,
    })
}

/// The GPUs that can be used, or why none can.
pub fn probe() -> Result<Vec<DeviceInfo>, KernelError> {
    let driver = check_libraries()?;
    let n = CudaContext::device_count()
        .map_err(|e| KernelError::Unavailable(format!("the NVIDIA driver found no GPU ({e:?})")))?;
    if n <= 0 {
        return Err(KernelError::Unavailable(
            "the NVIDIA driver found no GPU".into(),
        ));
    }
    (0..n as usize)
        .map(|i| {
            let ctx = CudaContext::new(i).map_err(cuda_err("open"))?;
            info_of(&ctx, driver)
        })
        .collect()
}

/// A weight matrix on the GPU, in its GGUF type: `rows` outputs of `cols` inputs.
#[derive(Debug)]
pub struct Weight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: CudaSlice<u8>,
}

impl Weight {
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// f32 values on the GPU; grows as needed and never shrinks (scratch is reused per step).
#[derive(Debug)]
pub struct Floats {
    buf: CudaSlice<f32>,
}

impl Floats {
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.len() == 0
    }
}

/// u32 values on the GPU (token ids, positions, block tables, cache slots), rewritten per
/// step.
#[derive(Debug)]
pub struct Ids {
    buf: CudaSlice<u32>,
}

/// The paged key/value cache on the GPU: per layer, keys and values of `n_blocks` blocks of
/// `BLOCK` positions x `kv_dim` f16 values.
#[derive(Debug)]
pub struct KvCache {
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
    n_layers: usize,
    kv_dim: usize,
    per_layer: usize,
}

/// Positions per cache block on the GPU (the engine's block size).
pub const BLOCK_POSITIONS: usize = 64;

/// A model's rotary embedding parameters on the GPU.
#[derive(Debug)]
pub struct RopeTable {
    n_rot: usize,
    theta_scale: f32,
    freq_scale: f32,
    factors: Option<CudaSlice<f32>>,
    neox: bool,
}

/// bf16 scratch of the cuBLAS path: activations and a chunk of dequantized weight rows.
#[derive(Debug, Default)]
pub struct MatmulScratch {
    acts: Option<CudaSlice<u16>>,
    weights: Option<CudaSlice<u16>>,
}

/// One GPU: its context, the stream everything runs on, cuBLAS and the kernels.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _module: Arc<CudaModule>,
    funcs: std::collections::HashMap<String, CudaFunction>,
    info: DeviceInfo,
    /// Time per operation, kept only under `OASIS_GPU_PROFILE=1` ([`CudaDevice::take_profile`]).
    profile: Option<std::sync::Mutex<Vec<OpTime>>>,
}

/// Times one operation when profiling: waits for the GPU on creation and on drop.
struct OpTimer<'a> {
    dev: &'a CudaDevice,
    op: &'static str,
    start: std::time::Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let _ = self.dev.stream.synchronize();
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(p) = &self.dev.profile {
            let mut p = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            OpTime::add(
                &mut p,
                OpTime {
                    op: self.op,
                    calls: 1,
                    seconds: secs,
                },
            );
        }
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// `compute_XY` for NVRTC, as the `&'static str` cudarc takes (one per architecture per
/// process).
fn arch_name(cc: (u32, u32)) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<(u32, u32, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.iter().find(|n| (n.0, n.1) == cc) {
        return n.2;
    }
    let leaked: &'static str = Box::leak(format!("compute_{}{}", cc.0, cc.1).into_boxed_str());
    names.push((cc.0, cc.1, leaked));
    leaked
}

/// A stable name for the program text (FNV-1a), for the compiled-kernel cache.
fn program_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// PTX for `cc`: from the cache folder when this program was compiled for it before, else
/// compiled with NVRTC (and cached).
fn compile(cc: (u32, u32), cache_dir: Option<&Path>) -> Result<Ptx, KernelError> {
    let program = source::program();
    let file: Option<PathBuf> = cache_dir.map(|d| {
        d.join(format!(
            "oasis-kernels-sm{}{}-{:016x}.ptx",
            cc.0,
            cc.1,
            program_hash(&program)
        ))
    });
    if let Some(f) = &file
        && let Ok(text) = std::fs::read_to_string(f)
    {
        return Ok(Ptx::from_src(text));
    }
    let opts = CompileOptions {
        arch: Some(arch_name(cc)),
        options: vec!["--std=c++17".into()],
        ..CompileOptions::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&program, opts).map_err(|e| {
        let detail = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        KernelError::Cuda {
            op: "compile the kernels",
            detail,
        }
    })?;
    if let Some(f) = &file {
        let _ = f.parent().map(std::fs::create_dir_all);
        let _ = std::fs::write(f, ptx.to_src());
    }
    Ok(ptx)
}

/// Enough blocks of `threads` for `n` elements, one thread each.
fn grid_for(n: usize, threads: u32) -> LaunchConfig {
    blocks_of(n.div_ceil(threads as usize).max(1), threads)
}

/// `blocks` blocks of `threads` threads, no dynamic shared memory.
fn blocks_of(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn as_i32(op: &'static str, v: usize) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Cuda {
        op,
        detail: format!("{v} does not fit the kernel's 32-bit count"),
    })
}

fn check_len(
    op: &'static str,
    what: &'static str,
    have: usize,
    need: usize,
) -> Result<(), KernelError> {
    if have < need {
        return Err(KernelError::Shape {
            op,
            what,
            expected: need,
            got: have,
        });
    }
    Ok(())
}

impl CudaDevice {
    /// Opens GPU `ordinal`: checks the driver and libraries, creates the context, stream and
    /// cuBLAS handle, and loads the kernels (compiled with NVRTC for this GPU, or from
    /// `cache_dir`).
    pub fn open(ordinal: usize, cache_dir: Option<&Path>) -> Result<CudaDevice, KernelError> {
        let driver = check_libraries()?;
        let n = CudaContext::device_count().map_err(|e| {
            KernelError::Unavailable(format!("the NVIDIA driver found no GPU ({e:?})"))
        })?;
        if ordinal >= n.max(0) as usize {
            return Err(KernelError::Unavailable(format!(
                "there is no GPU {ordinal} (the driver found {n})"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("open"))?;
        let info = info_of(&ctx, driver)?;
        if info.compute_capability < (8, 0) {
            return Err(KernelError::Unavailable(format!(
                "{} is sm_{}{}; the kernels need sm_80 (Ampere) or newer",
                info.name, info.compute_capability.0, info.compute_capability.1
            )));
        }
        let stream = ctx.new_stream().map_err(cuda_err("open a stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(blas_err("open cuBLAS"))?;
        let ptx = compile(info.compute_capability, cache_dir)?;
        let module = ctx.load_module(ptx).map_err(cuda_err("load the kernels"))?;
        let mut funcs = std::collections::HashMap::new();
        for name in source::kernel_names() {
            let f = module
                .load_function(&name)
                .map_err(cuda_err("load a kernel"))?;
            funcs.insert(name, f);
        }
        let profile = (std::env::var("OASIS_GPU_PROFILE").as_deref() == Ok("1"))
            .then(|| std::sync::Mutex::new(Vec::new()));
        Ok(CudaDevice {
            ctx,
            stream,
            blas,
            _module: module,
            funcs,
            info,
            profile,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn timer(&self, op: &'static str) -> Option<OpTimer<'_>> {
        self.profile.as_ref()?;
        let _ = self.stream.synchronize();
        Some(OpTimer {
            dev: self,
            op,
            start: std::time::Instant::now(),
        })
    }

    /// The time per operation since the last call, when `OASIS_GPU_PROFILE=1` was set as
    /// the device opened (each operation then waits for the GPU before and after it, so
    /// the run is slower and the figures say where its time goes); else empty.
    pub fn take_profile(&self) -> Vec<OpTime> {
        match &self.profile {
            Some(p) => {
                std::mem::take(&mut *p.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            }
            None => Vec::new(),
        }
    }

    /// Bytes of device memory free now.
    pub fn memory_free(&self) -> Result<u64, KernelError> {
        let (free, _) = self.ctx.mem_get_info().map_err(cuda_err("query"))?;
        Ok(free as u64)
    }

    fn func(&self, name: &str) -> Result<&CudaFunction, KernelError> {
        self.funcs.get(name).ok_or_else(|| KernelError::Cuda {
            op: "launch",
            detail: format!("no kernel `{name}`"),
        })
    }

    fn typed(&self, prefix: &str, ty: GgmlType) -> Result<&CudaFunction, KernelError> {
        let suffix = type_suffix(ty).ok_or(KernelError::UnsupportedType {
            op: "GPU product",
            ty: ty.name(),
        })?;
        self.func(&format!("{prefix}{suffix}"))
    }

    /// Copies a weight's bytes (as stored in the file) to the GPU.
    pub fn upload_weight(
        &self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Weight, KernelError> {
        if type_suffix(ty).is_none() {
            return Err(KernelError::UnsupportedType {
                op: "GPU weight",
                ty: ty.name(),
            });
        }
        if !cols.is_multiple_of(ty.block_len()) || !cols.is_multiple_of(32) {
            return Err(KernelError::NotBlockMultiple {
                op: "GPU weight",
                what: "row length",
                ty: ty.name(),
                block: ty.block_len().max(32),
                got: cols,
            });
        }
        let expected = ty.row_bytes(cols).unwrap_or(0) * rows;
        if bytes.len() != expected {
            return Err(KernelError::Length {
                op: "GPU weight",
                what: "weight",
                expected,
                got: bytes.len(),
            });
        }
        let data = self
            .stream
            .clone_htod(bytes)
            .map_err(cuda_err("upload a weight"))?;
        Ok(Weight {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn upload_floats(&self, v: &[f32]) -> Result<Floats, KernelError> {
        let buf = self.stream.clone_htod(v).map_err(cuda_err("upload"))?;
        Ok(Floats { buf })
    }

    /// `len` zeroed values.
    pub fn floats(&self, len: usize) -> Result<Floats, KernelError> {
        let buf = self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(cuda_err("allocate"))?;
        Ok(Floats { buf })
    }

    fn ensure(&self, f: &mut Floats, len: usize) -> Result<(), KernelError> {
        if f.buf.len() < len {
            f.buf = self
                .stream
                .alloc_zeros::<f32>(len.next_power_of_two())
                .map_err(cuda_err("allocate"))?;
        }
        Ok(())
    }

    pub fn ids(&self) -> Result<Ids, KernelError> {
        let buf = self
            .stream
            .alloc_zeros::<u32>(64)
            .map_err(cuda_err("allocate"))?;
        Ok(Ids { buf })
    }

    /// Replaces the contents of `dst` by `v` (growing it as needed).
    pub fn write_ids(&self, dst: &mut Ids, v: &[u32]) -> Result<(), KernelError> {
        let _timer = self.timer("upload ids");
        if dst.buf.len() < v.len() {
            dst.buf = self
                .stream
                .alloc_zeros::<u32>(v.len().next_power_of_two())
                .map_err(cuda_err("allocate"))?;
        }
        if v.is_empty() {
            return Ok(());
        }
        let mut view = dst.buf.slice_mut(..v.len());
        self.stream
            .memcpy_htod(v, &mut view)
            .map_err(cuda_err("upload ids"))
    }

    /// The first `len` values of `src` into `out` (waits for the work before it).
    pub fn download(
        &self,
        src: &Floats,
        len: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("download");
        check_len("download", "buffer", src.buf.len(), len)?;
        out.resize(len, 0.0);
        if len == 0 {
            return Ok(());
        }
        let view = src.buf.slice(..len);
        self.stream
            .memcpy_dtoh(&view, &mut out[..])
            .map_err(cuda_err("download"))?;
        self.stream.synchronize().map_err(cuda_err("download"))
    }

    pub fn matmul_scratch(&self) -> MatmulScratch {
        MatmulScratch::default()
    }

    /// A model's rotary embedding: `n_rot` rotated dimensions per head, ggml's
    /// `theta_scale = freq_base^(-2 / n_rot)`, `freq_scale`, optional per-pair factors,
    /// NeoX pairing or not.
    pub fn rope_table(
        &self,
        n_rot: usize,
        freq_base: f32,
        freq_scale: f32,
        factors: Option<&[f32]>,
        neox: bool,
    ) -> Result<RopeTable, KernelError> {
        let factors = match factors {
            Some(f) => Some(self.stream.clone_htod(f).map_err(cuda_err("upload"))?),
            None => None,
        };
        Ok(RopeTable {
            n_rot,
            theta_scale: freq_base.powf(-2.0 / n_rot as f32),
            freq_scale,
            factors,
            neox,
        })
    }

    /// A cache of `n_blocks` blocks per layer for `n_layers` layers of `kv_dim` values per
    /// position (f16 keys and values).
    pub fn kv_cache(
        &self,
        n_layers: usize,
        n_blocks: usize,
        kv_dim: usize,
    ) -> Result<KvCache, KernelError> {
        let per_layer = n_blocks * BLOCK_POSITIONS * kv_dim;
        let total = per_layer * n_layers;
        let k = self
            .stream
            .alloc_zeros::<u16>(total.max(1))
            .map_err(cuda_err("allocate the KV cache"))?;
        let v = self
            .stream
            .alloc_zeros::<u16>(total.max(1))
            .map_err(cuda_err("allocate the KV cache"))?;
        Ok(KvCache {
            k,
            v,
            n_layers,
            kv_dim,
            per_layer,
        })
    }

    /// `out[i] = w[ids[i]]` for the first `n` ids, dequantized to f32.
    pub fn embed(
        &self,
        w: &Weight,
        ids: &Ids,
        n: usize,
        out: &mut Floats,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("embed");
        self.ensure(out, n * w.cols)?;
        check_len("embed", "ids", ids.buf.len(), n)?;
        let f = self.typed("embed_", w.ty)?;
        let (k, nn) = (as_i32("embed", w.cols)?, as_i32("embed", n)?);
        let mut b = self.stream.launch_builder(f);
        b.arg(&w.data)
            .arg(&k)
            .arg(&ids.buf)
            .arg(&nn)
            .arg(&mut out.buf);
        // SAFETY: the kernel reads n ids (checked above; each < w.rows, checked by the
        // engine) and writes n x cols floats (ensured above).
        unsafe { b.launch(grid_for(n * w.cols / 32, 256)) }.map_err(cuda_err("embed"))?;
        Ok(())
    }

    /// `out = rms_norm(x) * w` over `rows` rows of `n`.
    pub fn rms_norm(
        &self,
        x: &Floats,
        w: &Floats,
        rows: usize,
        n: usize,
        eps: f32,
        out: &mut Floats,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("rms_norm");
        check_len("rms_norm", "input", x.buf.len(), rows * n)?;
        check_len("rms_norm", "weight", w.buf.len(), n)?;
        self.ensure(out, rows * n)?;
        let nn = as_i32("rms_norm", n)?;
        let mut b = self.stream.launch_builder(self.func("rms_norm")?);
        b.arg(&x.buf)
            .arg(&w.buf)
            .arg(&nn)
            .arg(&eps)
            .arg(&mut out.buf);
        let cfg = blocks_of(rows.max(1), 256);
        // SAFETY: one block per row, each reading and writing n values of its row; the
        // lengths are checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err("rms_norm"))?;
        Ok(())
    }

    /// [`CudaDevice::rms_norm`] with the output over the input (each row is read whole
    /// before it is written).
    pub fn rms_norm_in_place(
        &self,
        x: &mut Floats,
        w: &Floats,
        rows: usize,
        n: usize,
        eps: f32,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("rms_norm");
        check_len("rms_norm", "input", x.buf.len(), rows * n)?;
        check_len("rms_norm", "weight", w.buf.len(), n)?;
        let nn = as_i32("rms_norm", n)?;
        let mut b = self.stream.launch_builder(self.func("rms_norm_inplace")?);
        b.arg(&mut x.buf).arg(&w.buf).arg(&nn).arg(&eps);
        let cfg = blocks_of(rows.max(1), 256);
        // SAFETY: as `rms_norm`; the kernel reads a row's values (the sum, then each value
        // right before writing it at the same index), so in and out may be the same.
        unsafe { b.launch(cfg) }.map_err(cuda_err("rms_norm"))?;
        Ok(())
    }

    /// `out[t] = w · x[t]` for `n_tok` rows of `x` (`n_tok x cols` in, `n_tok x rows` out):
    /// a fused dequantize-and-multiply for up to 8 tokens, bf16 tensor-core GEMM (cuBLAS,
    /// f32 accumulation) over dequantized weight rows beyond.
    pub fn matmul(
        &self,
        w: &Weight,
        x: &Floats,
        n_tok: usize,
        out: &mut Floats,
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        let _timer = self.timer(if n_tok <= GEMV_MAX_TOKENS {
            "gemv"
        } else {
            "gemm"
        });
        check_len("matmul", "input", x.buf.len(), n_tok * w.cols)?;
        self.ensure(out, n_tok * w.rows)?;
        if n_tok == 0 {
            return Ok(());
        }
        if n_tok <= GEMV_MAX_TOKENS {
            let f = self.typed("gemv_", w.ty)?;
            let (rows, k, nt) = (
                as_i32("matmul", w.rows)?,
                as_i32("matmul", w.cols)?,
                as_i32("matmul", n_tok)?,
            );
            let mut b = self.stream.launch_builder(f);
            b.arg(&w.data)
                .arg(&rows)
                .arg(&k)
                .arg(&x.buf)
                .arg(&nt)
                .arg(&mut out.buf);
            let cfg = blocks_of(w.rows.div_ceil(GEMV_WARPS as usize), GEMV_WARPS * 32);
            // SAFETY: one warp per weight row (rows checked by the grid's bound in the
            // kernel); x holds n_tok x cols and out n_tok x rows (checked/ensured above).
            unsafe { b.launch(cfg) }.map_err(cuda_err("matmul"))?;
            return Ok(());
        }
        self.matmul_gemm(w, x, n_tok, out, scratch)
    }

    fn matmul_gemm(
        &self,
        w: &Weight,
        x: &Floats,
        n_tok: usize,
        out: &mut Floats,
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        let k = w.cols;
        // Activations to bf16.
        let acts_len = n_tok * k;
        if scratch.acts.as_ref().is_none_or(|a| a.len() < acts_len) {
            scratch.acts = Some(
                self.stream
                    .alloc_zeros::<u16>(acts_len.next_power_of_two())
                    .map_err(cuda_err("allocate"))?,
            );
        }
        // BF16 weights are what cuBLAS reads: one GEMM over all rows, no copy.
        let direct = w.ty == GgmlType::BF16;
        let chunk_rows = if direct {
            w.rows
        } else {
            (DEQUANT_CHUNK_VALUES / k).clamp(1, w.rows)
        };
        let wlen = if direct { 1 } else { chunk_rows * k };
        if scratch.weights.as_ref().is_none_or(|a| a.len() < wlen) {
            scratch.weights = Some(
                self.stream
                    .alloc_zeros::<u16>(wlen)
                    .map_err(cuda_err("allocate"))?,
            );
        }
        let (Some(acts), Some(wbuf)) = (scratch.acts.as_mut(), scratch.weights.as_mut()) else {
            return Err(KernelError::Cuda {
                op: "matmul",
                detail: "scratch missing".into(),
            });
        };
        {
            let n = acts_len as u64;
            let mut b = self.stream.launch_builder(self.func("f32_to_bf16")?);
            b.arg(&x.buf).arg(&n).arg(&mut *acts);
            // SAFETY: n values read from x (checked by the caller) and written to acts.
            unsafe { b.launch(grid_for(acts_len, 256)) }.map_err(cuda_err("matmul"))?;
        }
        let deq = self.typed("dequant_bf16_", w.ty)?;
        let kk = as_i32("matmul", k)?;
        let mut row0 = 0;
        while row0 < w.rows {
            let n_rows = chunk_rows.min(w.rows - row0);
            if !direct {
                let (r0, nr) = (as_i32("matmul", row0)?, as_i32("matmul", n_rows)?);
                let mut b = self.stream.launch_builder(deq);
                b.arg(&w.data).arg(&r0).arg(&nr).arg(&kk).arg(&mut *wbuf);
                // SAFETY: rows row0..row0+n_rows exist in w; wbuf holds n_rows x k.
                unsafe { b.launch(grid_for(n_rows * k / 32, 256)) }.map_err(cuda_err("matmul"))?;
            }
            // Row-major out[t, r] = sum_k x[t, k] w[r, k]: column-major, out^T (rows x
            // n_tok, ld = w.rows) = W (k x rows, transposed) x X (k x n_tok).
            let (m, n, kdim) = (as_i32("matmul", n_rows)?, as_i32("matmul", n_tok)?, kk);
            let ldc = as_i32("matmul", w.rows)?;
            let (pw, _gw) = if direct {
                w.data.device_ptr(&self.stream)
            } else {
                wbuf.device_ptr(&self.stream)
            };
            let (px, _gx) = acts.device_ptr(&self.stream);
            let (po, _go) = out.buf.device_ptr_mut(&self.stream);
            let po = po + (row0 * std::mem::size_of::<f32>()) as u64;
            // SAFETY: W is n_rows x k bf16 (lda = k; the weight itself when it is BF16, all
            // of its rows in one call), X is n_tok x k bf16 (ldb = k), and the
            // output column block starts at row0 of an n_tok x w.rows f32 matrix (ldc =
            // w.rows); every pointer stays alive (guards above) until the call is queued.
            unsafe { self.gemm_bf16_nt(m, n, kdim, pw, px, po, ldc) }
                .map_err(blas_err("matmul"))?;
            row0 += n_rows;
        }
        Ok(())
    }

    /// Queues `C (m x n, column-major, ldc) = A^T B` with `A` k x m and `B` k x n bf16
    /// (lda = ldb = k), f32 accumulation and output: a row-major `rows x k` weight times
    /// `n` row-major activations.
    ///
    /// # Safety
    /// The pointers must address device memory of those sizes, alive until the work ends.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_bf16_nt(
        &self,
        m: i32,
        n: i32,
        k: i32,
        a: u64,
        b: u64,
        c: u64,
        ldc: i32,
    ) -> Result<(), cudarc::cublas::result::CublasError> {
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: the caller's contract; alpha and beta outlive the call (host pointers
        // read while it is queued, cuBLAS's default pointer mode).
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                a as *const std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                k,
                b as *const std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                k,
                (&beta as *const f32).cast(),
                c as *mut std::ffi::c_void,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                ldc,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
    }

    /// Adds `bias` (n values) to each of `rows` rows of `x`.
    pub fn add_bias(
        &self,
        x: &mut Floats,
        bias: &Floats,
        rows: usize,
        n: usize,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("add_bias");
        check_len("add_bias", "input", x.buf.len(), rows * n)?;
        check_len("add_bias", "bias", bias.buf.len(), n)?;
        let (r, nn) = (as_i32("add_bias", rows)?, as_i32("add_bias", n)?);
        let mut b = self.stream.launch_builder(self.func("add_bias")?);
        b.arg(&mut x.buf).arg(&bias.buf).arg(&r).arg(&nn);
        // SAFETY: rows x n values of x, n of bias, checked above.
        unsafe { b.launch(grid_for(rows * n, 256)) }.map_err(cuda_err("add_bias"))?;
        Ok(())
    }

    /// Rotates `n_tok` rows of `n_heads` heads of `head_dim` by their positions `pos`.
    pub fn rope(
        &self,
        x: &mut Floats,
        pos: &Ids,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        t: &RopeTable,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("rope");
        check_len("rope", "input", x.buf.len(), n_tok * n_heads * head_dim)?;
        check_len("rope", "positions", pos.buf.len(), n_tok)?;
        if n_tok == 0 {
            return Ok(());
        }
        let (nh, hd, nr) = (
            as_i32("rope", n_heads)?,
            as_i32("rope", head_dim)?,
            as_i32("rope", t.n_rot)?,
        );
        let neox: i32 = i32::from(t.neox);
        let null: u64 = 0;
        let mut b = self.stream.launch_builder(self.func("rope")?);
        b.arg(&mut x.buf)
            .arg(&pos.buf)
            .arg(&nh)
            .arg(&hd)
            .arg(&nr)
            .arg(&t.theta_scale)
            .arg(&t.freq_scale);
        match &t.factors {
            Some(f) => b.arg(f),
            None => b.arg(&null),
        };
        b.arg(&neox);
        let cfg = blocks_of(n_tok, 128);
        // SAFETY: one block per token over its n_heads x n_rot/2 pairs (checked above); the
        // factors pointer is a buffer of n_rot/2 values or null.
        unsafe { b.launch(cfg) }.map_err(cuda_err("rope"))?;
        Ok(())
    }

    /// Writes `n_tok` keys and values (`kv_dim` each) into cache slots `slots` of `layer`.
    pub fn kv_write(
        &self,
        cache: &mut KvCache,
        layer: usize,
        k: &Floats,
        v: &Floats,
        slots: &Ids,
        n_tok: usize,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("kv_write");
        if layer >= cache.n_layers {
            return Err(KernelError::Shape {
                op: "kv_write",
                what: "layer",
                expected: cache.n_layers,
                got: layer,
            });
        }
        if n_tok == 0 {
            return Ok(());
        }
        check_len("kv_write", "keys", k.buf.len(), n_tok * cache.kv_dim)?;
        check_len("kv_write", "values", v.buf.len(), n_tok * cache.kv_dim)?;
        check_len("kv_write", "slots", slots.buf.len(), n_tok)?;
        let kd = as_i32("kv_write", cache.kv_dim)?;
        let range = layer * cache.per_layer..(layer + 1) * cache.per_layer;
        let mut kc = cache.k.slice_mut(range.clone());
        let mut vc = cache.v.slice_mut(range);
        let mut b = self.stream.launch_builder(self.func("kv_write")?);
        b.arg(&k.buf)
            .arg(&v.buf)
            .arg(&kd)
            .arg(&slots.buf)
            .arg(&mut kc)
            .arg(&mut vc);
        let cfg = blocks_of(n_tok, 256);
        // SAFETY: one block per token writing kv_dim values at its slot, inside the layer's
        // range (slots are below n_blocks x BLOCK, checked by the engine).
        unsafe { b.launch(cfg) }.map_err(cuda_err("kv_write"))?;
        Ok(())
    }

    /// Attention of `n_tok` query rows over `layer` of the cache: token t attends the keys
    /// at positions 0..=pos[t] of the sequence whose block table starts at
    /// `tables[table_of[t]]`. One block per (row, head); or, given `tiles` (their list on
    /// the GPU and its length), one per (tile, head), a tile being up to
    /// [`super::ATTN_TILE_ROWS`] consecutive rows of one sequence (`first row << 5 | rows`,
    /// as [`super::attention_tiles_of`] makes them) that read each key once for all of
    /// them: for prompt chunks, heads of at most [`ATTN_TILED_MAX_HEAD_DIM`] dimensions.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        q: &Floats,
        cache: &KvCache,
        layer: usize,
        tables: &Ids,
        table_of: &Ids,
        pos: &Ids,
        tiles: Option<(&Ids, usize)>,
        n_tok: usize,
        shape: AttnShape,
        scale: f32,
        out: &mut Floats,
    ) -> Result<(), KernelError> {
        let _timer = self.timer(match (tiles, n_tok) {
            (Some(_), _) => "attention (tiles)",
            (None, 1) => "attention (one row)",
            (None, _) => "attention (many rows)",
        });
        let (kernel, max_head_dim) = match tiles {
            Some((t, n)) => {
                check_len("attention", "tiles", t.buf.len(), n)?;
                ("attention_tiles", ATTN_TILED_MAX_HEAD_DIM)
            }
            None => ("attention", 256),
        };
        let qd = shape.n_heads * shape.head_dim;
        check_len("attention", "queries", q.buf.len(), n_tok * qd)?;
        if shape.head_dim > max_head_dim
            || !shape.head_dim.is_multiple_of(2)
            || shape.n_kv_heads == 0
            || !shape.n_heads.is_multiple_of(shape.n_kv_heads)
        {
            return Err(KernelError::Shape {
                op: "attention",
                what: "head_dim",
                expected: max_head_dim,
                got: shape.head_dim,
            });
        }
        self.ensure(out, n_tok * qd)?;
        let blocks = tiles.map_or(n_tok, |t| t.1);
        if n_tok == 0 || blocks == 0 {
            return Ok(());
        }
        let range = layer * cache.per_layer..(layer + 1) * cache.per_layer;
        let kc = cache.k.slice(range.clone());
        let vc = cache.v.slice(range);
        let (nh, nkv, hd) = (
            as_i32("attention", shape.n_heads)?,
            as_i32("attention", shape.n_kv_heads)?,
            as_i32("attention", shape.head_dim)?,
        );
        let mut b = self.stream.launch_builder(self.func(kernel)?);
        b.arg(&q.buf)
            .arg(&kc)
            .arg(&vc)
            .arg(&tables.buf)
            .arg(&table_of.buf)
            .arg(&pos.buf);
        if let Some((t, _)) = tiles {
            b.arg(&t.buf);
        }
        b.arg(&nh).arg(&nkv).arg(&hd).arg(&scale).arg(&mut out.buf);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, shape.n_heads as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block per (row or tile, head); a tile's rows lie inside the n_tok rows
        // of q and out (attention_tiles_of made them from the step's rows); each row reads
        // its query, the blocks its sequence's table lists (inside the layer's range) up
        // to its position, and writes its output row; lengths checked above and by the
        // engine's block tables.
        unsafe { b.launch(cfg) }.map_err(cuda_err("attention"))?;
        Ok(())
    }

    /// `gate = silu(gate) * up` over n values.
    pub fn swiglu(&self, gate: &mut Floats, up: &Floats, n: usize) -> Result<(), KernelError> {
        let _timer = self.timer("swiglu");
        check_len("swiglu", "gate", gate.buf.len(), n)?;
        check_len("swiglu", "up", up.buf.len(), n)?;
        let nn = n as u64;
        let mut b = self.stream.launch_builder(self.func("swiglu")?);
        b.arg(&mut gate.buf).arg(&up.buf).arg(&nn);
        // SAFETY: n values of each, checked above.
        unsafe { b.launch(grid_for(n, 256)) }.map_err(cuda_err("swiglu"))?;
        Ok(())
    }

    /// `x += y` over n values.
    pub fn add_assign(&self, x: &mut Floats, y: &Floats, n: usize) -> Result<(), KernelError> {
        let _timer = self.timer("add_assign");
        check_len("add_assign", "x", x.buf.len(), n)?;
        check_len("add_assign", "y", y.buf.len(), n)?;
        let nn = n as u64;
        let mut b = self.stream.launch_builder(self.func("add_assign")?);
        b.arg(&mut x.buf).arg(&y.buf).arg(&nn);
        // SAFETY: n values of each, checked above.
        unsafe { b.launch(grid_for(n, 256)) }.map_err(cuda_err("add_assign"))?;
        Ok(())
    }

    /// `out[i] = x[rows[i]]` for `n_rows` rows of width n.
    pub fn gather_rows(
        &self,
        x: &Floats,
        rows: &Ids,
        n_rows: usize,
        n: usize,
        out: &mut Floats,
    ) -> Result<(), KernelError> {
        let _timer = self.timer("gather_rows");
        check_len("gather_rows", "rows", rows.buf.len(), n_rows)?;
        self.ensure(out, n_rows * n)?;
        let (nr, nn) = (as_i32("gather_rows", n_rows)?, as_i32("gather_rows", n)?);
        let mut b = self.stream.launch_builder(self.func("gather_rows")?);
        b.arg(&x.buf)
            .arg(&rows.buf)
            .arg(&nr)
            .arg(&nn)
            .arg(&mut out.buf);
        // SAFETY: n_rows indices (checked above), each a row of x (checked by the engine).
        unsafe { b.launch(grid_for(n_rows * n, 256)) }.map_err(cuda_err("gather_rows"))?;
        Ok(())
    }

    /// Measures the copy bandwidth and the bf16 GEMM rate of this GPU (about a second;
    /// the buffers are freed before it returns).
    pub fn ceilings(&self) -> Result<super::Ceilings, KernelError> {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        // A copy of 1 GiB (less on a small GPU), 10 times per sample.
        let free = self.memory_free()?;
        let bytes = ((free / 4) as usize).clamp(1 << 20, 1 << 30);
        let src = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(cuda_err("allocate"))?;
        let mut dst = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(cuda_err("allocate"))?;
        let mut copies = Vec::new();
        for sample in 0..6 {
            self.synchronize()?;
            let t = std::time::Instant::now();
            for _ in 0..10 {
                self.stream
                    .memcpy_dtod(&src, &mut dst)
                    .map_err(cuda_err("copy"))?;
            }
            self.synchronize()?;
            if sample > 0 {
                copies.push(2.0 * 10.0 * bytes as f64 / t.elapsed().as_secs_f64());
            }
        }
        drop((src, dst));
        // bf16 GEMM, n x n x n.
        // Random values in [-1, 1), not zeros (zeros draw less power and run faster).
        let n = 8192usize;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u16> = (0..n * n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                half::bf16::from_f32(v).to_bits()
            })
            .collect();
        let a = self
            .stream
            .clone_htod(&random)
            .map_err(cuda_err("upload"))?;
        let b = self
            .stream
            .clone_htod(&random)
            .map_err(cuda_err("upload"))?;
        drop(random);
        let mut c = self
            .stream
            .alloc_zeros::<f32>(n * n)
            .map_err(cuda_err("allocate"))?;
        let ni = as_i32("ceilings", n)?;
        let mut gemms = Vec::new();
        for sample in 0..6 {
            self.synchronize()?;
            let t = std::time::Instant::now();
            for _ in 0..5 {
                let (pa, _ga) = a.device_ptr(&self.stream);
                let (pb, _gb) = b.device_ptr(&self.stream);
                let (pc, _gc) = c.device_ptr_mut(&self.stream);
                // SAFETY: a and b hold n x n bf16, c n x n f32; alive until synchronized.
                unsafe { self.gemm_bf16_nt(ni, ni, ni, pa, pb, pc, ni) }
                    .map_err(blas_err("ceilings"))?;
            }
            self.synchronize()?;
            if sample > 0 {
                gemms.push(5.0 * 2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64());
            }
        }
        Ok(super::Ceilings {
            copy_bytes_per_s: median(copies),
            gemm_bf16_flop_per_s: median(gemms),
            gemm_size: n,
        })
    }

    /// Waits for everything queued, reporting an error a kernel raised.
    pub fn synchronize(&self) -> Result<(), KernelError> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))?;
        self.ctx.check_err().map_err(cuda_err("synchronize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC, the run-time compiler, needs no GPU: the program compiles for every target
    /// the backend serves (CI puts the CUDA 13 NVRTC wheel on `LD_LIBRARY_PATH`; without it
    /// the test says so and passes, unless `OASIS_REQUIRE_CUDA_TOOLS=1`).
    #[test]
    fn nvrtc_compiles_the_kernels_for_ampere_ada_and_hopper() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            assert!(
                std::env::var("OASIS_REQUIRE_CUDA_TOOLS").as_deref() != Ok("1"),
                "NVRTC (libnvrtc.so.13) not found"
            );
            eprintln!("skipped: NVRTC not found");
            return;
        }
        let dir = std::env::temp_dir().join(format!("oasis-nvrtc-test-{}", std::process::id()));
        for cc in [(8, 0), (8, 9), (9, 0)] {
            let ptx =
                compile(cc, Some(&dir)).unwrap_or_else(|e| panic!("sm_{}{}: {e}", cc.0, cc.1));
            let text = ptx.to_src();
            for name in source::kernel_names() {
                assert!(
                    text.contains(&format!(".entry {name}(")),
                    "{name} missing for {cc:?}"
                );
            }
            // The second time comes from the cache.
            let again = compile(cc, Some(&dir)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again.to_src(), text);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
