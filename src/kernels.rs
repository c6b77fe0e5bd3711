//! The WGSL kernel sources, one file per op family under `kernels/`, compiled into the binary.
//!
//! To find a kernel from its op name: the op `ops::<family>::<name>` dispatches entry point
//! `<name>` (or a variant of it) in `kernels/<family>.wgsl`.

/// One WGSL file: its stem, its source, and its binding convention (binding 0 is the uniform
/// parameter block, then `reads` read-only and `writes` read-write storage arrays).
pub struct Family {
    /// File stem under `kernels/`.
    pub name: &'static str,
    /// The WGSL source.
    pub source: &'static str,
    /// Read-only storage bindings, numbered from 1.
    pub reads: u32,
    /// Read-write storage bindings, numbered after the read-only ones.
    pub writes: u32,
}

macro_rules! family {
    ($name:literal, $reads:expr, $writes:expr) => {
        Family {
            name: $name,
            source: include_str!(concat!("../kernels/", $name, ".wgsl")),
            reads: $reads,
            writes: $writes,
        }
    };
    // A family whose file is preceded by shared parts (`kernels/<prelude>.wgsl`, in order).
    ($name:literal, $reads:expr, $writes:expr, prelude $($prelude:literal),+) => {
        Family {
            name: $name,
            source: concat!(
                $(include_str!(concat!("../kernels/", $prelude, ".wgsl")), "\n",)+
                include_str!(concat!("../kernels/", $name, ".wgsl"))
            ),
            reads: $reads,
            writes: $writes,
        }
    };
}

/// Every kernel family.
pub const FAMILIES: &[Family] = &[
    family!("elementwise", 2, 2),
    family!("matmul", 4, 2, prelude "matmul_tile"),
    family!("matmul_subgroup", 4, 2, prelude "matmul_tile", "lane_share"),
    family!("matmul_general", 4, 2),
    family!("matmul_wg", 4, 2),
    family!("matmul_jvp", 6, 2, prelude "matmul_jvp_tile"),
    family!("matmul_jvp_subgroup", 6, 2, prelude "matmul_jvp_tile", "lane_share"),
    family!("matmul_jvp_general", 6, 2),
    family!("matmul_jvp_wg", 6, 2),
    family!("conv2d", 6, 2),
    family!("conv2d_3x3", 6, 2),
    family!("conv2d_lower", 4, 2),
    family!("conv2d_gemm", 6, 1),
    family!("conv2d_im2col", 2, 2),
    family!("conv2d_igemm", 6, 2),
    family!("pool", 3, 3),
    family!("reduce", 2, 2),
    family!("softmax", 3, 2),
    family!("flat", 1, 2),
    family!("norm", 6, 3),
    family!("dropout", 1, 2),
    family!("optim", 4, 3),
];

/// One family by name. Panics on an unknown family: the names are compile-time constants.
pub fn family(name: &str) -> &'static Family {
    FAMILIES.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("unknown kernel family {name}"))
}

/// The source of one family.
pub fn source(name: &str) -> &'static str {
    family(name).source
}

/// The source of `family` with each `const NAME: u32 = …u;` line re-valued as asked, so that a
/// raw file stays valid WGSL (and is validated as such) while variants change tile sizes.
pub fn specialised_source(family: &str, specialise: &[(&str, u32)]) -> String {
    let mut src = source(family).to_string();
    for (name, value) in specialise {
        let needle = format!("const {name}: u32 = ");
        let start = src.find(&needle).unwrap_or_else(|| panic!("{family}.wgsl has no `{needle}`"));
        let value_start = start + needle.len();
        let end = value_start + src[value_start..].find(';').expect("const without ;");
        src.replace_range(value_start..end, &format!("{value}u"));
    }
    src
}
