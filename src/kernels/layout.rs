//! The typed contract of a kernel's uniform block: each layout is a `#[repr(C)]` Rust struct
//! of named `u32` / `f32` fields, and the WGSL `struct Params` of the families taking it is
//! derived from that struct by [`kernel_params!`], so that the two cannot drift apart.

/// A scalar type a uniform field may have: 4 bytes, aligned to 4 on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// WGSL `u32`.
    U32,
    /// WGSL `f32`.
    F32,
}

/// The Rust types allowed as uniform fields, with their WGSL scalar.
pub trait WgslScalar {
    /// The WGSL scalar of the type.
    const SCALAR: Scalar;
}

impl WgslScalar for u32 {
    const SCALAR: Scalar = Scalar::U32;
}

impl WgslScalar for f32 {
    const SCALAR: Scalar = Scalar::F32;
}

/// One field of a uniform block.
#[derive(Debug, Clone, Copy)]
pub struct ParamsField {
    /// Its name, the same in Rust and WGSL.
    pub name: &'static str,
    /// Its type.
    pub scalar: Scalar,
    /// Its byte offset in the Rust struct.
    pub offset: usize,
}

/// A uniform block layout: what the contract test compares against the WGSL that naga reads.
#[derive(Debug)]
pub struct ParamsLayout {
    /// The Rust struct's name.
    pub name: &'static str,
    /// Its fields, in declaration order.
    pub fields: &'static [ParamsField],
    /// `size_of` the Rust struct: the bytes a dispatch uploads.
    pub size: usize,
    /// The derived WGSL declaration `struct Params { ... }`.
    pub wgsl: &'static str,
}

/// A uniform parameter block of the kernels, declared with [`kernel_params!`].
pub trait KernelParams: bytemuck::Pod {
    /// Its layout, shared with the WGSL.
    const LAYOUT: ParamsLayout;
}

/// Defines a `#[repr(C)]` Pod struct of `u32` / `f32` fields and implements [`KernelParams`]
/// for it: the field table (with `offset_of!`) and the WGSL `struct Params` with the same
/// members in the same order (field docs become WGSL comments).
macro_rules! kernel_params {
    ($(#[doc = $doc:literal])+
     pub struct $name:ident { $($(#[doc = $fdoc:literal])+ pub $field:ident: $ty:ident,)+ }) => {
        $(#[doc = $doc])+
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[doc = $fdoc])+ pub $field: $ty,)+
        }

        impl $crate::kernels::KernelParams for $name {
            const LAYOUT: $crate::kernels::ParamsLayout = $crate::kernels::ParamsLayout {
                name: stringify!($name),
                fields: &[$($crate::kernels::ParamsField {
                    name: stringify!($field),
                    scalar: <$ty as $crate::kernels::WgslScalar>::SCALAR,
                    offset: std::mem::offset_of!($name, $field),
                }),+],
                size: std::mem::size_of::<$name>(),
                wgsl: concat!(
                    "// Derived from ", stringify!($name), " (src/kernels/params.rs).\n",
                    "struct Params {\n",
                    $($("    //", $fdoc, "\n",)+ "    ", stringify!($field), ": ", stringify!($ty), ",\n",)+
                    "}\n",
                ),
            };
        }
    };
}
pub(crate) use kernel_params;

/// `v` as a `u32` uniform field. Panics when it does not fit: a shape that large cannot be
/// indexed by the kernels, and the ops' own limits should have refused it earlier.
#[track_caller]
pub fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("kernel parameter {v} exceeds u32"))
}
