//! Portability without the hardware: every assembled kernel source, raw and with each
//! specialisation the ops dispatch, is translated by naga to SPIR-V (Vulkan), MSL (Metal) and
//! HLSL (DX12), and its workgroup memory fits the 16 KiB every WebGPU adapter offers. Where Debian's
//! `spirv-val` is installed, the SPIR-V is validated by it too.

use geopath::kernels::{specialised_source, FAMILIES};
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

/// `(const, value)` pairs substituted in a kernel file.
type Specialisation = &'static [(&'static str, u32)];

/// The specialisations the ops dispatch (see `KernelKey::specialise` in src/ops): each family
/// with the values its variants choose.
const SPECIALISED: &[(&str, &[Specialisation])] = &[
    ("matmul_wg", &[&[("TM4", 1), ("TN4", 1)], &[("TM4", 2), ("TN4", 2)]]),
    ("matmul_wg_vec4", &[&[("TM4", 1), ("TN4", 1)], &[("TM4", 2), ("TN4", 2)]]),
    ("matmul_wg_f16", &[&[("TM4", 1), ("TN4", 1)], &[("TM4", 2), ("TN4", 2)]]),
    ("matmul_wg_f16_vec4", &[&[("TM4", 1), ("TN4", 1)], &[("TM4", 2), ("TN4", 2)]]),
    ("matmul_jvp", &[&[("HAS_DA", 0)], &[("HAS_DA", 1)]]),
    ("matmul_jvp_subgroup", &[&[("HAS_DA", 0)], &[("HAS_DA", 1)]]),
    ("matmul_jvp_general", &[&[("HAS_DA", 0)], &[("HAS_DA", 1)]]),
    ("matmul_jvp_wg", &[&[("HAS_DA", 0)], &[("HAS_DA", 1)]]),
    (
        "conv2d_3x3",
        &[
            &[("OT", 4), ("PX4", 1)],
            &[("OT", 4), ("PX4", 2)],
            &[("OT", 4), ("PX4", 4)],
            &[("OT", 8), ("PX4", 1)],
            &[("OT", 8), ("PX4", 2)],
            &[("OT", 8), ("PX4", 4)],
            &[("OT", 16), ("PX4", 1)],
            &[("OT", 16), ("PX4", 2)],
            &[("OT", 16), ("PX4", 4)],
        ],
    ),
    ("conv2d", &[&[("BW_OT", 8), ("BW_CT", 8)]]),
    ("norm", &[&[("WG", 64)], &[("WG", 256)]]),
];

/// The smallest `maxComputeWorkgroupStorageSize` of a WebGPU adapter, in bytes.
const WORKGROUP_BYTES: u32 = 16 * 1024;

fn module(name: &str, src: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    (module, info)
}

/// Bytes of workgroup memory the module declares (every entry point of a file shares it: an
/// upper bound for each).
fn workgroup_bytes(module: &naga::Module) -> u32 {
    module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
        .sum()
}

fn translate(name: &str, src: &str) {
    let (module, info) = module(name, src);
    let bytes = workgroup_bytes(&module);
    assert!(bytes <= WORKGROUP_BYTES, "{name}: {bytes} bytes of workgroup memory");
    let spv_options = spv::Options { lang_version: (1, 3), ..Default::default() };
    let words = spv::write_vec(&module, &info, &spv_options, None).unwrap_or_else(|e| panic!("{name} → SPIR-V: {e}"));
    spirv_val(name, &words);
    let msl_options = msl::Options { lang_version: (2, 4), ..Default::default() };
    msl::write_string(&module, &info, &msl_options, &msl::PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name} → MSL: {e}"));
    let hlsl_options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl::PipelineOptions { entry_point: None })
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name} → HLSL: {e}"));
}

/// Runs `spirv-val` on the words where it is installed.
fn spirv_val(name: &str, words: &[u32]) {
    let Ok(status) = std::process::Command::new("spirv-val").arg("--version").output() else {
        return;
    };
    if !status.status.success() {
        return;
    }
    let path = std::env::temp_dir().join(format!("geopath-{name}-{}.spv", std::process::id()));
    std::fs::write(&path, bytemuck::cast_slice(words)).unwrap();
    let out = std::process::Command::new("spirv-val").args(["--target-env", "vulkan1.1"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{name}: spirv-val: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_kernel_translates_to_spirv_msl_and_hlsl_within_16_kib_of_workgroup_memory() {
    for f in FAMILIES {
        translate(f.name, f.source());
    }
}

#[test]
fn every_specialisation_in_use_translates_too() {
    for (family, variants) in SPECIALISED {
        for specialise in *variants {
            let name = format!("{family} {specialise:?}");
            translate(&name, &specialised_source(family, specialise));
        }
    }
}

#[test]
fn the_workgroup_count_sees_every_staged_block() {
    // matmul_wg at 8 × 8 per invocation stages two blocks of 16 × 128 floats: 16 KiB exactly.
    let (m, _) = module("matmul_wg", &specialised_source("matmul_wg", &[("TM4", 2), ("TN4", 2)]));
    assert_eq!(workgroup_bytes(&m), 16 * 1024);
}
