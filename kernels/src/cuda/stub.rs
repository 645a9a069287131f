//! The CUDA backend's types in a build without the `cuda` feature: none can be made, and
//! [`probe`] says why, so the engine is written once for both builds.

use std::convert::Infallible;
use std::path::Path;

use super::DeviceInfo;
use crate::{GgmlType, KernelError};

const NOT_BUILT: &str = "this build has no CUDA backend (built without the `cuda` feature)";

/// The GPUs that can be used: never any in this build.
pub fn probe() -> Result<Vec<DeviceInfo>, KernelError> {
    Err(KernelError::Unavailable(NOT_BUILT.into()))
}

macro_rules! never {
    ($($name:ident),*) => {$(
        /// Cannot be made in a build without CUDA.
        #[derive(Debug)]
        pub struct $name(Infallible);
    )*};
}
never!(
    CudaDevice,
    Weight,
    Floats,
    Ids,
    KvCache,
    MatmulScratch,
    RopeTable
);

impl Floats {
    pub fn len(&self) -> usize {
        match self.0 {}
    }
    pub fn is_empty(&self) -> bool {
        match self.0 {}
    }
}

impl Weight {
    pub fn ty(&self) -> GgmlType {
        match self.0 {}
    }
    pub fn rows(&self) -> usize {
        match self.0 {}
    }
    pub fn cols(&self) -> usize {
        match self.0 {}
    }
}

#[allow(clippy::too_many_arguments, missing_docs)]
impl CudaDevice {
    pub fn open(_ordinal: usize, _cache_dir: Option<&Path>) -> Result<CudaDevice, KernelError> {
        Err(KernelError::Unavailable(NOT_BUILT.into()))
    }
    pub fn info(&self) -> &DeviceInfo {
        match self.0 {}
    }
    pub fn memory_free(&self) -> Result<u64, KernelError> {
        match self.0 {}
    }
    pub fn upload_weight(
        &self,
        _: GgmlType,
        _: usize,
        _: usize,
        _: &[u8],
    ) -> Result<Weight, KernelError> {
        match self.0 {}
    }
    pub fn upload_floats(&self, _: &[f32]) -> Result<Floats, KernelError> {
        match self.0 {}
    }
    pub fn floats(&self, _: usize) -> Result<Floats, KernelError> {
        match self.0 {}
    }
    pub fn ids(&self) -> Result<Ids, KernelError> {
        match self.0 {}
    }
    pub fn write_ids(&self, _: &mut Ids, _: &[u32]) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn download(&self, _: &Floats, _: usize, _: &mut Vec<f32>) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn matmul_scratch(&self) -> MatmulScratch {
        match self.0 {}
    }
    pub fn rope_table(
        &self,
        _: usize,
        _: f32,
        _: f32,
        _: Option<&[f32]>,
        _: bool,
    ) -> Result<RopeTable, KernelError> {
        match self.0 {}
    }
    pub fn kv_cache(&self, _: usize, _: usize, _: usize) -> Result<KvCache, KernelError> {
        match self.0 {}
    }
    pub fn embed(&self, _: &Weight, _: &Ids, _: usize, _: &mut Floats) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn rms_norm(
        &self,
        _: &Floats,
        _: &Floats,
        _: usize,
        _: usize,
        _: f32,
        _: &mut Floats,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn rms_norm_in_place(
        &self,
        _: &mut Floats,
        _: &Floats,
        _: usize,
        _: usize,
        _: f32,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn matmul(
        &self,
        _: &Weight,
        _: &Floats,
        _: usize,
        _: &mut Floats,
        _: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn add_bias(
        &self,
        _: &mut Floats,
        _: &Floats,
        _: usize,
        _: usize,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn rope(
        &self,
        _: &mut Floats,
        _: &Ids,
        _: usize,
        _: usize,
        _: usize,
        _: &RopeTable,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn kv_write(
        &self,
        _: &mut KvCache,
        _: usize,
        _: &Floats,
        _: &Floats,
        _: &Ids,
        _: usize,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn attention(
        &self,
        _: &Floats,
        _: &KvCache,
        _: usize,
        _: &Ids,
        _: &Ids,
        _: &Ids,
        _: Option<(&Ids, usize)>,
        _: usize,
        _: crate::AttnShape,
        _: f32,
        _: &mut Floats,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn swiglu(&self, _: &mut Floats, _: &Floats, _: usize) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn add_assign(&self, _: &mut Floats, _: &Floats, _: usize) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn gather_rows(
        &self,
        _: &Floats,
        _: &Ids,
        _: usize,
        _: usize,
        _: &mut Floats,
    ) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn ceilings(&self) -> Result<super::Ceilings, KernelError> {
        match self.0 {}
    }
    pub fn synchronize(&self) -> Result<(), KernelError> {
        match self.0 {}
    }
    pub fn take_profile(&self) -> Vec<super::OpTime> {
        match self.0 {}
    }
}
