//! The typed contract between the Rust dispatch code and the WGSL kernels, checked with naga on
//! every assembled family source: the `Params` struct against its Rust struct, the bindings
//! against the family's counts and f16 bindings, the shared constants against their Rust values, the entry
//! points' workgroup sizes against the Rust declarations; and on the raw files under
//! `kernels/`: no function or struct defined twice, flags tested by name.

use geopath::gpu::{uniform_binding_bytes, MAX_PARAM_BYTES};
use geopath::kernels::{Family, Scalar, WorkgroupSize, FAMILIES, SHARED_CONSTANTS};
use naga::{AddressSpace, Expression, Literal, Module, StorageAccess, TypeInner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Every family with its parsed assembled source.
fn modules() -> &'static [(&'static Family, Module)] {
    static MODULES: OnceLock<Vec<(&'static Family, Module)>> = OnceLock::new();
    MODULES.get_or_init(|| {
        FAMILIES
            .iter()
            .map(|f| {
                let src = f.source();
                let module = naga::front::wgsl::parse_str(src)
                    .unwrap_or_else(|e| panic!("{}: {}", f.name, e.emit_to_string(src)));
                (f, module)
            })
            .collect()
    })
}

/// The value of the module's `const name: u32`, if it declares one.
fn const_u32(module: &Module, name: &str) -> Option<u32> {
    let (_, c) = module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name))?;
    match module.global_expressions[c.init] {
        Expression::Literal(Literal::U32(v)) => Some(v),
        ref other => panic!("const {name} is not a u32 literal: {other:?}"),
    }
}

#[test]
fn params_structs_match_their_rust_structs() {
    for (f, module) in modules() {
        let layout = f.params;
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .unwrap_or_else(|| panic!("{}: no struct Params", f.name));
        let TypeInner::Struct { members, span } = &ty.inner else { panic!("{}: Params is not a struct", f.name) };
        let wgsl: Vec<(&str, Scalar, usize)> = members
            .iter()
            .map(|m| {
                let scalar = match module.types[m.ty].inner {
                    TypeInner::Scalar(naga::Scalar::U32) => Scalar::U32,
                    TypeInner::Scalar(naga::Scalar::F32) => Scalar::F32,
                    ref other => panic!("{}: Params.{:?} is {other:?}", f.name, m.name),
                };
                (m.name.as_deref().unwrap_or("?"), scalar, m.offset as usize)
            })
            .collect();
        let rust: Vec<(&str, Scalar, usize)> = layout.fields.iter().map(|p| (p.name, p.scalar, p.offset)).collect();
        assert_eq!(wgsl, rust, "{}: WGSL Params vs {}", f.name, layout.name);
        let bound = uniform_binding_bytes(layout.size);
        assert!(*span as usize <= bound, "{}: Params spans {span} bytes, the binding {bound}", f.name);
        assert!(layout.size <= MAX_PARAM_BYTES, "{}: {} is {} bytes", f.name, layout.name, layout.size);
    }
}

#[test]
fn bindings_are_the_uniform_then_reads_then_writes() {
    for (f, module) in modules() {
        let mut bindings = BTreeMap::new();
        for (_, var) in module.global_variables.iter() {
            if let Some(rb) = &var.binding {
                assert_eq!(rb.group, 0, "{}: {:?} is not in group 0", f.name, var.name);
                assert!(bindings.insert(rb.binding, var).is_none(), "{}: binding {} twice", f.name, rb.binding);
            }
        }
        let expected: Vec<u32> = (0..=f.reads + f.writes).collect();
        assert_eq!(bindings.keys().copied().collect::<Vec<_>>(), expected, "{}: binding numbers", f.name);
        let uniform = bindings[&0];
        assert_eq!(uniform.space, AddressSpace::Uniform, "{}: binding 0", f.name);
        assert_eq!(module.types[uniform.ty].name.as_deref(), Some("Params"), "{}: binding 0's type", f.name);
        for (&binding, var) in &bindings {
            if binding == 0 {
                continue;
            }
            let AddressSpace::Storage { access } = var.space else {
                panic!("{}: binding {binding} ({:?}) is not a storage buffer", f.name, var.name)
            };
            let element = match module.types[var.ty].inner {
                TypeInner::Array { base, .. } => &module.types[base].inner,
                ref other => panic!("{}: binding {binding} ({:?}) is {other:?}, not an array", f.name, var.name),
            };
            // Arrays of scalars or of vectors (vec4 loads), judged by their scalar.
            let half = matches!(
                element,
                TypeInner::Scalar(naga::Scalar::F16) | TypeInner::Vector { scalar: naga::Scalar::F16, .. }
            );
            let words = matches!(element, TypeInner::Scalar(naga::Scalar::U32));
            // An f16 binding is `array<f16>`, or `array<u32>` of two halves a word.
            let ok = if f.half.contains(&binding) { half || words } else { !half };
            assert!(
                ok,
                "{}: binding {binding} ({:?}) holds {element:?}; the family's f16 bindings are {:?}",
                f.name, var.name, f.half
            );
            let read_only = binding <= f.reads;
            assert_eq!(
                !access.contains(StorageAccess::STORE),
                read_only,
                "{}: binding {binding} ({:?}) should be {}",
                f.name,
                var.name,
                if read_only { "read-only" } else { "read-write" }
            );
        }
    }
}

#[test]
fn shared_constants_have_their_rust_values() {
    for (f, module) in modules() {
        for &(name, value) in SHARED_CONSTANTS {
            assert_eq!(const_u32(module, name), Some(value), "{}: const {name}", f.name);
        }
    }
}

#[test]
fn flags_are_distinct_bits() {
    let flags: Vec<(&str, u32)> = SHARED_CONSTANTS.iter().copied().filter(|(n, _)| n.starts_with("FLAG_")).collect();
    let mut seen = 0u32;
    for (name, bit) in flags {
        assert!(bit.is_power_of_two(), "{name} = {bit} is not a single bit");
        assert_eq!(seen & bit, 0, "{name} = {bit} is taken by another flag");
        seen |= bit;
    }
}

#[test]
fn entry_points_have_the_declared_workgroup_sizes() {
    for (f, module) in modules() {
        let declared: Vec<&str> = f.entry_points.iter().flat_map(|e| e.names.iter().copied()).collect();
        let unique: BTreeSet<&str> = declared.iter().copied().collect();
        assert_eq!(unique.len(), declared.len(), "{}: an entry point is declared twice", f.name);
        let found: BTreeSet<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(found, unique, "{}: entry points in the WGSL vs declared in Rust", f.name);
        for entry in &module.entry_points {
            let size = match f.workgroup_size(&entry.name).expect("declared") {
                WorkgroupSize::Fixed(size) => size,
                WorkgroupSize::Tunable(name) => {
                    [const_u32(module, name).unwrap_or_else(|| panic!("{}: no const {name}", f.name)), 1, 1]
                }
            };
            assert_eq!(entry.workgroup_size, size, "{}::{}: workgroup size", f.name, entry.name);
        }
    }
}

/// The raw WGSL files: `kernels/*.wgsl` and `kernels/include/*.wgsl`.
fn raw_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("include")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module-scope `fn` and `struct` names a WGSL text defines.
fn definitions(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|line| line.strip_prefix("fn ").or_else(|| line.strip_prefix("struct ")))
        .map(|rest| rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn no_function_or_struct_is_defined_in_two_places() {
    // Where each name is defined: (file stem, whether the file is an include).
    let mut defined: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    // The derived `struct Params` is defined by every assembled source.
    defined.entry("Params".into()).or_default().push(("src/kernels (derived)".into(), false));
    let files = raw_files();
    assert!(files.len() >= FAMILIES.len());
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let include = path.parent().is_some_and(|d| d.ends_with("include"));
        for name in definitions(&src) {
            defined.entry(name).or_default().push((stem.clone(), include));
        }
    }
    // A name may be defined by several includes only as alternative implementations of one
    // interface (e.g. `stage_a` by scalar or vec4 loads): no family assembles two of them.
    let alternatives = |places: &[(String, bool)]| {
        places.iter().all(|(_, include)| *include)
            && FAMILIES
                .iter()
                .all(|f| f.includes.iter().filter(|i| places.iter().any(|(s, _)| s == i.name)).count() <= 1)
    };
    let twice: Vec<_> = defined.iter().filter(|(_, places)| places.len() > 1 && !alternatives(places)).collect();
    assert!(twice.is_empty(), "defined in more than one place (move it to kernels/include/): {twice:#?}");
}

#[test]
fn flags_are_tested_by_name_and_the_uniform_is_derived() {
    for path in raw_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        for (i, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            let bare = code.split("flags & ").skip(1).any(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
            assert!(!bare, "{}:{}: a flag tested by number: {line}", path.display(), i + 1);
            assert!(!code.contains("var<uniform>"), "{}:{}: the uniform binding is derived", path.display(), i + 1);
        }
    }
}

#[test]
fn every_file_is_a_family_or_an_include_in_use() {
    let names: BTreeSet<String> = raw_files()
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            if p.parent().unwrap().ends_with("include") {
                format!("include/{stem}")
            } else {
                stem
            }
        })
        .collect();
    let used: BTreeSet<String> = FAMILIES
        .iter()
        .flat_map(|f| f.includes.iter().map(|i| format!("include/{}", i.name)).chain([f.stem.to_string()]))
        .collect();
    assert_eq!(names, used, "WGSL files vs the families and their includes");
}
