//! Every assembled kernel source (shared constants, derived `Params`, includes, the family's
//! file) parses and validates with naga, raw and with each of its tunables re-valued.

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
        validate(f.name, f.source());
    }
}

#[test]
fn tile_specialisations_validate() {
    for f in FAMILIES {
        // Every `const NAME: u32 = …u;` of a family's file and includes may be specialised; each
        // re-valued source must still validate.
        let tunables = f.includes.iter().map(|i| i.source).chain([f.file]).flat_map(str::lines);
        for line in tunables {
            let Some(rest) = line.trim().strip_prefix("const ") else {
                continue;
            };
            let Some((name, _)) = rest.split_once(": u32 = ") else {
                continue;
            };
            let name: &'static str = Box::leak(name.to_string().into_boxed_str());
            for value in [1u32, 2, 4] {
                let src = specialised_source(f.name, &[(name, value)]);
                assert!(src.contains(&format!("const {name}: u32 = {value}u;")));
                validate(f.name, &src);
            }
        }
    }
}
