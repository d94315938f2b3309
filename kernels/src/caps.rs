//! What an op may ask of the device: its capabilities ([`Caps`]), and the one rule by which op
//! families that have several kernels choose among them ([`Variant`]): each names its kernels
//! in an enum whose `for_caps` picks the default from the capabilities, and tests and benches
//! force another through `Gpu::force_variant`. The device context stores those choices by type
//! and knows no op.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;

use serde::Serialize;

/// Features of the device that select kernel variants.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Caps {
    pub f16: bool,
    pub timestamps: bool,
    /// Software rasteriser (lavapipe/llvmpipe): texel fetches are vectorised there while buffer
    /// loads are not, so the matmul reads its operands through textures.
    pub software: bool,
    /// Lanes per subgroup where the device has subgroups of one fixed width.
    pub subgroup_width: Option<u32>,
    /// 16 x 16 x 16 cooperative matrices of f16 inputs and f32 results on subgroups of 32.
    pub coop_f16: bool,
}

/// A choice among an op family's kernels.
pub trait Variant: Copy + Any {
    /// The kernel this adapter runs by default.
    fn for_caps(caps: &Caps) -> Self;
}

/// Variants forced in place of their defaults, one per variant type.
#[derive(Default)]
pub(crate) struct Forced(RefCell<HashMap<TypeId, Box<dyn Any>>>);

impl Forced {
    pub(crate) fn get<V: Variant>(&self) -> Option<V> {
        self.0
            .borrow()
            .get(&TypeId::of::<V>())
            .and_then(|v| v.downcast_ref::<V>())
            .copied()
    }

    pub(crate) fn set<V: Variant>(&self, v: Option<V>) {
        let mut map = self.0.borrow_mut();
        match v {
            Some(v) => map.insert(TypeId::of::<V>(), Box::new(v)),
            None => map.remove(&TypeId::of::<V>()),
        };
    }
}
