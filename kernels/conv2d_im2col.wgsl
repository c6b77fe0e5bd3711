// im2col of 2-D convolutions lowered to products (src/ops/conv.rs; see conv2d_lower.wgsl for
// the layouts): patches [qp, npc] of images [n0, n0 + nb) of x (and of dx, flag 8), written as
// vec4 (a file of its own for the vec4-typed outputs).
// Bindings: 1 x, 2 dx (read); 3 patches, 4 dpatches (read_write).

const WG: u32 = 64u;

struct Params {
    n0: u32,
    nb: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    q: u32,
    op: u32,
    npc: u32,
    flags: u32,
    total: u32,
    splits: u32,
    total_rows: u32, // lower_im2col: qp
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out0: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out1: array<vec4<f32>>;

fn lane(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Image, row and column of the 4 patch columns 4 t .. 4 t + 3 (one division per lane: integer
// division is slow on lavapipe), and whether each is a real column (not padding).
struct Cols {
    n: vec4<u32>,
    oy: vec4<u32>,
    ox: vec4<u32>,
    ok: vec4<bool>,
}

fn cols_of(t: u32) -> Cols {
    let ohw = p.oh * p.ow;
    let j0 = t * 4u;
    var n = j0 / ohw;
    var pix = j0 % ohw;
    var oy = pix / p.ow;
    var ox = pix % p.ow;
    var r: Cols;
    for (var e = 0u; e < 4u; e++) {
        r.ok[e] = n < p.nb;
        r.n[e] = p.n0 + min(n, p.nb - 1u);
        r.oy[e] = oy;
        r.ox[e] = ox;
        ox += 1u;
        if (ox == p.ow) {
            ox = 0u;
            oy += 1u;
            if (oy == p.oh) {
                oy = 0u;
                n += 1u;
            }
        }
    }
    return r;
}

// in0 = x, in1 = dx (flag 8) -> out0 = patches, out1 = dpatches. Lanes: groups of 4
// consecutive patch columns (so a SIMD batch reads and writes contiguous memory), each looping
// over all qp rows; total = npc / 4.
@compute @workgroup_size(WG)
fn lower_im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let cl = cols_of(t);
    let has_dx = (p.flags & 8u) != 0u;
    let hw = p.h * p.w;
    let iy0 = vec4<i32>(cl.oy * p.stride) - vec4<i32>(i32(p.pad));
    let ix0 = vec4<i32>(cl.ox * p.stride) - vec4<i32>(i32(p.pad));
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    let zero = vec4<i32>(0);
    let n4 = p.npc / 4u;
    var q = 0u;
    for (var c = 0u; c < p.c; c++) {
        let plane = (cl.n * p.c + vec4<u32>(c)) * hw;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = iy0 + vec4<i32>(i32(ky));
            let yok = select(vec4<bool>(false), (iy < hi), (iy >= zero));
            let rowb = plane + vec4<u32>(clamp(iy, zero, hi - 1)) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let ix = ix0 + vec4<i32>(i32(kx));
                let ok = select(vec4<bool>(false), select(vec4<bool>(false), (ix < wi), (ix >= zero)),
                                select(vec4<bool>(false), yok, cl.ok));
                let xi = rowb + vec4<u32>(clamp(ix, zero, wi - 1));
                let o = q * n4 + t;
                out0[o] = select(vec4<f32>(0.0), vec4<f32>(in0[xi.x], in0[xi.y], in0[xi.z], in0[xi.w]), ok);
                if (has_dx) {
                    out1[o] = select(vec4<f32>(0.0), vec4<f32>(in1[xi.x], in1[xi.y], in1[xi.z], in1[xi.w]), ok);
                }
                q += 1u;
            }
        }
    }
    let qp = p.total_rows;
    for (; q < qp; q++) {
        out0[q * n4 + t] = vec4<f32>(0.0);
        if (has_dx) { out1[q * n4 + t] = vec4<f32>(0.0); }
    }
}

