//! The WGSL kernels, one file per op family under `kernels/`, compiled into the binary, and
//! their typed contract with the Rust dispatch code.
//!
//! To find a kernel from its op name: the op `ops::<family>::<name>` dispatches entry point
//! `<name>` (or a variant of it) in `kernels/<family>.wgsl`.
//!
//! A family's source is assembled from the shared constants ([`constants`]: flag bits,
//! reduction codes, workgroup sizes), its `struct Params` and uniform binding derived from its
//! Rust parameter struct ([`params`]), the shared WGSL it includes (`kernels/include/`), then
//! its own file. `tests/kernels_contract.rs` checks every assembled source against the Rust
//! side with naga.

pub mod constants;
mod families;
mod layout;
pub mod params;

pub use constants::*;
pub use families::{FAMILIES, LANE_SHARED_JVP_WG, LANE_SHARED_WG, STAGED_WG, TILED_WG};
pub use layout::{u32_of, KernelParams, ParamsField, ParamsLayout, Scalar, WgslScalar};
pub use params::*;

use std::sync::OnceLock;

/// A piece of WGSL shared by several families: `kernels/include/<name>.wgsl`.
#[derive(Debug)]
pub struct Include {
    /// File stem under `kernels/include/`.
    pub name: &'static str,
    /// Its WGSL.
    pub source: &'static str,
}

/// The workgroup size an entry point declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkgroupSize {
    /// These invocations along x, y, z.
    Fixed([u32; 3]),
    /// `[NAME, 1, 1]` for the family's `const NAME: u32`, which dispatches specialise.
    Tunable(&'static str),
}

/// Entry points of a family sharing one workgroup size.
#[derive(Debug)]
pub struct EntryPoints {
    /// Their names.
    pub names: &'static [&'static str],
    /// Their workgroup size, which the dispatch math assumes.
    pub workgroup_size: WorkgroupSize,
}

/// One kernel family: a WGSL file, what is assembled before it, and its binding convention
/// (binding 0 is the uniform parameter block, then `reads` read-only and `writes` read-write
/// storage arrays).
#[derive(Debug)]
pub struct Family {
    /// File stem under `kernels/`.
    pub name: &'static str,
    /// The WGSL of `kernels/<name>.wgsl` alone.
    pub file: &'static str,
    /// Stem of that file: the family's name, unless it is another family's file assembled with
    /// other includes (`matmul_wg_f16` is `matmul_wg.wgsl` on f16 operands).
    pub stem: &'static str,
    /// The shared WGSL assembled before the file, in order.
    pub includes: &'static [Include],
    /// The uniform block its kernels read as `p`.
    pub params: &'static ParamsLayout,
    /// Read-only storage bindings, numbered from 1.
    pub reads: u32,
    /// Read-write storage bindings, numbered after the read-only ones.
    pub writes: u32,
    /// The storage bindings holding f16 tensors (`array<f16>`, or `array<u32>` of two halves a
    /// word); every other storage binding holds f32 (or u32 words). Dispatches are refused
    /// when a tensor's [`DType`](crate::dtype::DType) disagrees.
    pub half: &'static [u32],
    /// Every entry point of the file, grouped by workgroup size.
    pub entry_points: &'static [EntryPoints],
    /// Whether its shader modules are created without wgpu's runtime checks
    /// (`ShaderRuntimeChecks::unchecked`: no index clamping, no loop bounding, no division
    /// guards), unless `GEOPATH_CHECKED_SHADERS=1`. Set, conservatively, only where the WGSL
    /// proves by construction that every storage index is below a size the host derives from
    /// the bound tensors (behind an explicit `if (i >= bound) { return; }` or a `min` clamp to
    /// the last row or column), that no function or workgroup array is indexed by anything but
    /// a constant-trip loop variable, that every loop runs a trip count taken from the
    /// parameters, and that it divides only by constants or by parameters that a preceding
    /// bounds guard proves non-zero.
    pub trusted: bool,
}

impl Family {
    /// The assembled WGSL source (built once): the shared constants, `struct Params` and its
    /// binding, the includes, then the family's file.
    pub fn source(&self) -> &'static str {
        static SOURCES: OnceLock<Vec<String>> = OnceLock::new();
        let sources = SOURCES.get_or_init(|| FAMILIES.iter().map(Family::assemble).collect());
        let index = FAMILIES.iter().position(|f| f.name == self.name).expect("a family of FAMILIES");
        &sources[index]
    }

    /// The workgroup size entry point `entry` declares, if the family has it.
    pub fn workgroup_size(&self, entry: &str) -> Option<WorkgroupSize> {
        self.entry_points.iter().find(|e| e.names.contains(&entry)).map(|e| e.workgroup_size)
    }

    /// Builds what [`Family::source`] returns. The `enable` directives of the includes and the
    /// file (e.g. `enable f16;`), which WGSL wants before any declaration, come first.
    fn assemble(&self) -> String {
        let is_enable = |l: &&str| l.starts_with("enable ");
        let without_enables =
            |src: &str| -> String { src.lines().filter(|l| !is_enable(l)).map(|l| l.to_string() + "\n").collect() };
        let enables: String = self
            .includes
            .iter()
            .map(|i| i.source)
            .chain([self.file])
            .flat_map(|src| src.lines().filter(is_enable).map(|l| l.to_string() + "\n"))
            .collect();
        let mut src = format!(
            "{enables}// kernels/{}.wgsl as assembled by src/kernels: shared constants, Params, includes, the file.\n{}\n{}",
            self.name,
            constants::CONSTANTS_WGSL,
            self.params.wgsl
        );
        src.push_str("@group(0) @binding(0) var<uniform> p: Params;\n");
        for include in self.includes {
            src.push_str(&format!("\n// kernels/include/{}.wgsl\n{}", include.name, without_enables(include.source)));
        }
        src.push_str(&format!("\n// kernels/{}.wgsl\n{}", self.stem, without_enables(self.file)));
        src
    }
}

/// One family by name. Panics on an unknown family: the names are compile-time constants.
pub fn family(name: &str) -> &'static Family {
    FAMILIES.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("unknown kernel family {name}"))
}

/// The assembled source of `family` with each `const NAME: u32 = …u;` line re-valued as asked,
/// so that a raw file stays valid WGSL (and is validated as such) while variants change tile
/// sizes.
pub fn specialised_source(family: &str, specialise: &[(&str, u32)]) -> String {
    let mut src = self::family(family).source().to_string();
    for (name, value) in specialise {
        let needle = format!("const {name}: u32 = ");
        let start = src.find(&needle).unwrap_or_else(|| panic!("{family}.wgsl has no `{needle}`"));
        let value_start = start + needle.len();
        let end = value_start + src[value_start..].find(';').expect("const without ;");
        src.replace_range(value_start..end, &format!("{value}u"));
    }
    src
}
