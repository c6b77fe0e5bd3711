// Fast path of 2-D convolution for 3x3 kernels, stride 1, padding 1 (OH = H, OW = W):
// forward and fused forward mode (JVP). Layout NCHW, weights [O, C, 3, 3].
//
// Each invocation computes OT output channels x (4 * PX4) consecutive output pixels of one row
// in registers (vec4 accumulators over pixels). Per input channel and kernel row it loads one
// input row segment of 4 * PX4 + 2 values once and reuses it for all OT channels and the three
// horizontal taps; the 3 * OT weights it loads are the same for every invocation of the
// workgroup (gid.z picks the channel block). No workgroup memory: lavapipe vectorises
// per-invocation register work across invocations; hardware adapters get smaller tiles via
// specialisation of OT and PX4.
//
// Lanes t = gid.x + gid.y * num_workgroups.x * LANE_WG run over (n, oy, row segment); gid.z over
// blocks of OT output channels.
// Bindings and params as in conv2d.wgsl:
//   1 x, 2 w, 3 bias, 4 dx, 5 dw, 6 dbias (read), 7 y, 8 dy (read_write).
// Flags: FLAG_BIAS (with dbias), FLAG_RELU, FLAG_HAS_DX (dx present, else dx = 0).

const OT: u32 = 8u;    // output channels per invocation
const PX4: u32 = 2u;   // vec4 groups of output pixels per invocation
const XW: u32 = 4u * PX4 + 2u;   // input row segment per output row segment

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> dx: array<f32>;
@group(0) @binding(5) var<storage, read> dw: array<f32>;
@group(0) @binding(6) var<storage, read> dbias: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> dy: array<f32>;

// Loads the input row segment starting at column ox0 - 1 of the row starting at `base` from
// `x` (src 0) or `dx` (src 1), zero outside the image (everywhere when !rowok: the rows above
// and below it are padding; loads stay clamped inside the row, control flow stays uniform).
fn load_row(src: u32, base: u32, ox0: u32, rowok: bool, seg: ptr<function, array<f32, XW>>) {
    let wlast = i32(p.w) - 1;
    for (var j = 0u; j < XW; j++) {
        let ix = i32(ox0 + j) - 1;
        let i = base + u32(clamp(ix, 0, wlast));
        var v: f32;
        if (src == 0u) { v = x[i]; } else { v = dx[i]; }
        (*seg)[j] = select(0.0, v, rowok && ix >= 0 && ix <= wlast);
    }
}

// Stores acc (and optionally dacc) with the bias / ReLU epilogue.
fn store(n: u32, oy: u32, o0: u32, ox0: u32, acc: ptr<function, array<vec4<f32>, OT * PX4>>,
         dacc: ptr<function, array<vec4<f32>, OT * PX4>>, tangent: bool) {
    for (var oi = 0u; oi < OT; oi++) {
        let o = o0 + oi;
        if (o >= p.o) { break; }
        var b = 0.0;
        var db = 0.0;
        if ((p.flags & FLAG_BIAS) != 0u) {
            b = bias[o];
            if (tangent) { db = dbias[o]; }
        }
        let base = ((n * p.o + o) * p.h + oy) * p.w;
        for (var q = 0u; q < PX4; q++) {
            let v4 = (*acc)[oi * PX4 + q] + vec4<f32>(b);
            let d4 = (*dacc)[oi * PX4 + q] + vec4<f32>(db);
            for (var e = 0u; e < 4u; e++) {
                let ox = ox0 + q * 4u + e;
                if (ox >= p.w) { break; }
                var v = v4[e];
                var d = d4[e];
                if ((p.flags & FLAG_RELU) != 0u && v <= 0.0) {
                    v = 0.0;
                    d = 0.0;
                }
                y[base + ox] = v;
                if (tangent) { dy[base + ox] = d; }
            }
        }
    }
}

@compute @workgroup_size(LANE_WG)
fn conv3x3_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let o0 = gid.z * OT;
    let ox0 = (t % p.tiles_x) * (4u * PX4);
    let r = t / p.tiles_x;
    let oy = r % p.h;
    let n = r / p.h;
    let wso = p.c * 9u;
    var acc: array<vec4<f32>, OT * PX4>;
    var seg: array<f32, XW>;
    for (var c = 0u; c < p.c; c++) {
        let plane = (n * p.c + c) * p.h * p.w;
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(oy + ky) - 1;
            let rowok = iy >= 0 && iy < i32(p.h);
            load_row(0u, plane + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w, ox0, rowok, &seg);
            var xs: array<vec4<f32>, 3u * PX4>;
            for (var q = 0u; q < PX4; q++) {
                for (var kx = 0u; kx < 3u; kx++) {
                    let j = q * 4u + kx;
                    xs[q * 3u + kx] = vec4<f32>(seg[j], seg[j + 1u], seg[j + 2u], seg[j + 3u]);
                }
            }
            let wrow = c * 9u + ky * 3u;
            for (var oi = 0u; oi < OT; oi++) {
                let wb = min(o0 + oi, p.o - 1u) * wso + wrow;
                let w0 = vec4<f32>(w[wb]);
                let w1 = vec4<f32>(w[wb + 1u]);
                let w2 = vec4<f32>(w[wb + 2u]);
                for (var q = 0u; q < PX4; q++) {
                    let a = oi * PX4 + q;
                    acc[a] = fma(w2, xs[q * 3u + 2u], fma(w1, xs[q * 3u + 1u], fma(w0, xs[q * 3u], acc[a])));
                }
            }
        }
    }
    var unused: array<vec4<f32>, OT * PX4>;
    store(n, oy, o0, ox0, &acc, &unused, false);
}

@compute @workgroup_size(LANE_WG)
fn conv3x3_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let o0 = gid.z * OT;
    let ox0 = (t % p.tiles_x) * (4u * PX4);
    let r = t / p.tiles_x;
    let oy = r % p.h;
    let n = r / p.h;
    let wso = p.c * 9u;
    let has_dx = (p.flags & FLAG_HAS_DX) != 0u;
    var acc: array<vec4<f32>, OT * PX4>;
    var dacc: array<vec4<f32>, OT * PX4>;
    var seg: array<f32, XW>;
    var dseg: array<f32, XW>;
    for (var c = 0u; c < p.c; c++) {
        let plane = (n * p.c + c) * p.h * p.w;
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(oy + ky) - 1;
            let rowok = iy >= 0 && iy < i32(p.h);
            let rowbase = plane + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
            load_row(0u, rowbase, ox0, rowok, &seg);
            if (has_dx) { load_row(1u, rowbase, ox0, rowok, &dseg); }
            var xs: array<vec4<f32>, 3u * PX4>;
            var dxs: array<vec4<f32>, 3u * PX4>;
            for (var q = 0u; q < PX4; q++) {
                for (var kx = 0u; kx < 3u; kx++) {
                    let j = q * 4u + kx;
                    xs[q * 3u + kx] = vec4<f32>(seg[j], seg[j + 1u], seg[j + 2u], seg[j + 3u]);
                    dxs[q * 3u + kx] = vec4<f32>(dseg[j], dseg[j + 1u], dseg[j + 2u], dseg[j + 3u]);
                }
            }
            let wrow = c * 9u + ky * 3u;
            for (var oi = 0u; oi < OT; oi++) {
                let wb = min(o0 + oi, p.o - 1u) * wso + wrow;
                let w0 = vec4<f32>(w[wb]);
                let w1 = vec4<f32>(w[wb + 1u]);
                let w2 = vec4<f32>(w[wb + 2u]);
                let d0 = vec4<f32>(dw[wb]);
                let d1 = vec4<f32>(dw[wb + 1u]);
                let d2 = vec4<f32>(dw[wb + 2u]);
                for (var q = 0u; q < PX4; q++) {
                    let a = oi * PX4 + q;
                    let x0 = xs[q * 3u];
                    let x1 = xs[q * 3u + 1u];
                    let x2 = xs[q * 3u + 2u];
                    acc[a] = fma(w2, x2, fma(w1, x1, fma(w0, x0, acc[a])));
                    var d = fma(d2, x2, fma(d1, x1, fma(d0, x0, dacc[a])));
                    if (has_dx) {
                        d = fma(w2, dxs[q * 3u + 2u], fma(w1, dxs[q * 3u + 1u], fma(w0, dxs[q * 3u], d)));
                    }
                    dacc[a] = d;
                }
            }
        }
    }
    store(n, oy, o0, ox0, &acc, &dacc, true);
}
