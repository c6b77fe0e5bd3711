//! Every WGSL file parses and validates with naga, raw and with the specialisations in use.

use geopath::kernels::{specialised_source, FAMILIES};

fn validate(name: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {e:?}"));
}

#[test]
fn every_kernel_file_validates() {
    assert!(FAMILIES.len() >= 3);
    for f in FAMILIES {
        validate(f.name, f.source);
    }
}

#[test]
fn tile_specialisations_validate() {
    for (tm, tn4, wg) in [(16, 4, 8), (4, 1, 16), (8, 4, 8)] {
        for fam in ["matmul", "matmul_jvp"] {
            let src = specialised_source(fam, &[("TM", tm), ("TN4", tn4), ("WG", wg)]);
            assert!(src.contains(&format!("const TM: u32 = {tm}u;")));
            validate(fam, &src);
        }
    }
}
