// 2-D convolution for any kernel size, stride and padding: forward, fused forward mode (JVP),
// and the three backward rules. Layout NCHW row-major, weights [O, C, KH, KW]; the output is
// [N, O, OH, OW] with OH = (H + 2 pad - KH) / stride + 1. No workgroup memory: each invocation
// keeps a small tile in registers (lavapipe vectorises across invocations).
//
// Invocation layout: the lane index t = gid.x + gid.y * num_workgroups.x * LANE_WG runs over a
// flattened pixel dimension (see each entry point), gid.z over channel blocks, so that all
// invocations of one workgroup share their weight loads.
//
// Bindings:      conv2d_fwd  conv2d_jvp  conv2d_bwd_data  conv2d_bwd_weight  conv2d_bwd_bias  conv2d_sum_splits
//   1 in0        x           x           gy               x                  gy               partials
//   2 in1        w           w           w                gy                 -                -
//   3 in2        bias        bias        -                -                  -                -
//   4 in3        -           dx          -                -                  -                -
//   5 in4        -           dw          -                -                  -                -
//   6 in5        -           dbias       -                -                  -                -
//   7 out0       y           y           gx               gw (or partials)   gb (or partials) sum
//   8 out1       -           dy          -                -                  -                -
// conv2d_bwd_weight_3x3 (3x3, stride 1, pad 1): bindings as conv2d_bwd_weight.
// conv2d_flip_weights: in0 w [O, C, KH, KW] -> out0 [C, O, KH, KW] rotated by 180 degrees, so
// that a stride-1 backward-data pass is a forward convolution of gy (the 3x3 fast path uses it).
// Flags: FLAG_BIAS (with dbias), FLAG_RELU, FLAG_HAS_DX (dx present, else dx = 0).

const PX: u32 = 4u;    // output pixels (one row segment) per invocation in fwd / jvp / bwd_data
const BW_OT: u32 = 8u; // output channels per invocation in conv2d_bwd_weight_3x3
const BW_CT: u32 = 8u; // input channels per invocation in conv2d_bwd_weight_3x3

@group(0) @binding(1) var<storage, read> in0: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;
@group(0) @binding(4) var<storage, read> in3: array<f32>;
@group(0) @binding(5) var<storage, read> in4: array<f32>;
@group(0) @binding(6) var<storage, read> in5: array<f32>;
@group(0) @binding(7) var<storage, read_write> out0: array<f32>;
@group(0) @binding(8) var<storage, read_write> out1: array<f32>;

// Input coordinate of output coordinate `o` at kernel tap `k` (may be out of range).
fn in_coord(o: u32, k: u32) -> i32 {
    return i32(o * p.stride + k) - i32(p.pad);
}

// y = act(conv(x, w) + bias). Lanes: (n, oy, row segment of PX output pixels); gid.z: block
// of 4 output channels.
@compute @workgroup_size(LANE_WG)
fn conv2d_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let o0 = gid.z * 4u;
    let ox0 = (t % p.tiles_x) * PX;
    let r = t / p.tiles_x;
    let oy = r % p.oh;
    let n = r / p.oh;
    let ksz = p.kh * p.kw;
    let wso = p.c * ksz;
    let oc = min(vec4<u32>(o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.o - 1u)) * wso;
    var acc: array<vec4<f32>, PX>;
    for (var c = 0u; c < p.c; c++) {
        let xbase = (n * p.c + c) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = in_coord(oy, ky);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            let rowbase = xbase + u32(iy) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let wi = c * ksz + ky * p.kw + kx;
                let wv = vec4<f32>(in1[oc.x + wi], in1[oc.y + wi], in1[oc.z + wi], in1[oc.w + wi]);
                for (var j = 0u; j < PX; j++) {
                    let ix = in_coord(ox0 + j, kx);
                    let inside = ix >= 0 && ix < i32(p.w);
                    let xv = select(0.0, in0[rowbase + u32(clamp(ix, 0, i32(p.w) - 1))], inside);
                    acc[j] = fma(vec4<f32>(xv), wv, acc[j]);
                }
            }
        }
    }
    for (var q = 0u; q < 4u; q++) {
        let o = o0 + q;
        if (o >= p.o) { break; }
        var b = 0.0;
        if ((p.flags & FLAG_BIAS) != 0u) { b = in2[o]; }
        let ybase = ((n * p.o + o) * p.oh + oy) * p.ow;
        for (var j = 0u; j < PX; j++) {
            let ox = ox0 + j;
            if (ox >= p.ow) { break; }
            var v = acc[j][q] + b;
            if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
            out0[ybase + ox] = v;
        }
    }
}

// Fused forward mode: y = act(conv(x, w) + bias), dy = act'·(conv(dx, w) + conv(x, dw) + dbias).
// Same lanes as conv2d_fwd.
@compute @workgroup_size(LANE_WG)
fn conv2d_jvp(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let o0 = gid.z * 4u;
    let ox0 = (t % p.tiles_x) * PX;
    let r = t / p.tiles_x;
    let oy = r % p.oh;
    let n = r / p.oh;
    let ksz = p.kh * p.kw;
    let wso = p.c * ksz;
    let has_dx = (p.flags & FLAG_HAS_DX) != 0u;
    let oc = min(vec4<u32>(o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.o - 1u)) * wso;
    var acc: array<vec4<f32>, PX>;
    var dacc: array<vec4<f32>, PX>;
    for (var c = 0u; c < p.c; c++) {
        let xbase = (n * p.c + c) * p.h * p.w;
        for (var ky = 0u; ky < p.kh; ky++) {
            let iy = in_coord(oy, ky);
            if (iy < 0 || iy >= i32(p.h)) { continue; }
            let rowbase = xbase + u32(iy) * p.w;
            for (var kx = 0u; kx < p.kw; kx++) {
                let wi = c * ksz + ky * p.kw + kx;
                let wv = vec4<f32>(in1[oc.x + wi], in1[oc.y + wi], in1[oc.z + wi], in1[oc.w + wi]);
                let dwv = vec4<f32>(in4[oc.x + wi], in4[oc.y + wi], in4[oc.z + wi], in4[oc.w + wi]);
                for (var j = 0u; j < PX; j++) {
                    let ix = in_coord(ox0 + j, kx);
                    let inside = ix >= 0 && ix < i32(p.w);
                    let xi = rowbase + u32(clamp(ix, 0, i32(p.w) - 1));
                    let xv = select(0.0, in0[xi], inside);
                    acc[j] = fma(vec4<f32>(xv), wv, acc[j]);
                    var d = dacc[j];
                    d = fma(vec4<f32>(xv), dwv, d);
                    if (has_dx) {
                        d = fma(vec4<f32>(select(0.0, in3[xi], inside)), wv, d);
                    }
                    dacc[j] = d;
                }
            }
        }
    }
    for (var q = 0u; q < 4u; q++) {
        let o = o0 + q;
        if (o >= p.o) { break; }
        var b = 0.0;
        var db = 0.0;
        if ((p.flags & FLAG_BIAS) != 0u) {
            b = in2[o];
            db = in5[o];
        }
        let ybase = ((n * p.o + o) * p.oh + oy) * p.ow;
        for (var j = 0u; j < PX; j++) {
            let ox = ox0 + j;
            if (ox >= p.ow) { break; }
            var v = acc[j][q] + b;
            var dv = dacc[j][q] + db;
            if ((p.flags & FLAG_RELU) != 0u && v <= 0.0) {
                v = 0.0;
                dv = 0.0;
            }
            out0[ybase + ox] = v;
            out1[ybase + ox] = dv;
        }
    }
}

// gx[n, c, iy, ix] = sum over (o, ky, kx) of gy[n, o, oy, ox] w[o, c, ky, kx] where
// oy * stride - pad + ky = iy (likewise x). Lanes: (n, iy, row segment of PX input pixels);
// gid.z: block of 4 input channels.
@compute @workgroup_size(LANE_WG)
fn conv2d_bwd_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let c0 = gid.z * 4u;
    let ix0 = (t % p.tiles_x) * PX;
    let r = t / p.tiles_x;
    let iy = r % p.h;
    let n = r / p.h;
    let ksz = p.kh * p.kw;
    let cc = min(vec4<u32>(c0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.c - 1u)) * ksz;
    let s = p.stride;
    var acc: array<vec4<f32>, PX>;
    for (var o = 0u; o < p.o; o++) {
        let gbase = (n * p.o + o) * p.oh * p.ow;
        let wbase = o * p.c * ksz;
        for (var ky = 0u; ky < p.kh; ky++) {
            let ty = i32(iy + p.pad) - i32(ky);
            if (ty < 0) { break; }
            if (u32(ty) % s != 0u || u32(ty) / s >= p.oh) { continue; }
            let growbase = gbase + (u32(ty) / s) * p.ow;
            for (var kx = 0u; kx < p.kw; kx++) {
                let wi = wbase + ky * p.kw + kx;
                let wv = vec4<f32>(in1[cc.x + wi], in1[cc.y + wi], in1[cc.z + wi], in1[cc.w + wi]);
                for (var j = 0u; j < PX; j++) {
                    let tx = i32(ix0 + j + p.pad) - i32(kx);
                    let txu = u32(max(tx, 0));
                    let ok = tx >= 0 && txu % s == 0u && txu / s < p.ow;
                    let g = select(0.0, in0[growbase + min(txu / s, p.ow - 1u)], ok);
                    acc[j] = fma(vec4<f32>(g), wv, acc[j]);
                }
            }
        }
    }
    for (var q = 0u; q < 4u; q++) {
        let c = c0 + q;
        if (c >= p.c) { break; }
        let xb = ((n * p.c + c) * p.h + iy) * p.w;
        for (var j = 0u; j < PX; j++) {
            let ix = ix0 + j;
            if (ix >= p.w) { break; }
            out0[xb + ix] = acc[j][q];
        }
    }
}

// gw[o, q] = sum over rows (n, oy) and ox of gy[n, o, oy, ox] x[n, c, iy, ix], with
// q = (c, ky, kx) flattened (Q = C KH KW). Lanes: blocks of 4 consecutive q; gid.z:
// split * ceil(O / 4) + block of 4 output channels. Split s sums rows
// [s * rows_per_split, (s + 1) * rows_per_split) and writes out0[s * O * Q + o * Q + q].
@compute @workgroup_size(LANE_WG)
fn conv2d_bwd_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let ksz = p.kh * p.kw;
    let nq = p.c * ksz;
    let oblocks = (p.o + 3u) / 4u;
    let split = gid.z / oblocks;
    let o0 = (gid.z % oblocks) * 4u;
    let q0 = t * 4u;
    let qv = min(vec4<u32>(q0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(nq - 1u));
    let cv = qv / ksz;
    let kyv = vec4<i32>((qv % ksz) / p.kw);
    let kxv = vec4<i32>(qv % p.kw);
    let hw = p.h * p.w;
    let cbase = cv * hw;
    let ov = min(vec4<u32>(o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.o - 1u));
    let ohw = p.oh * p.ow;
    let r_begin = split * p.rows_per_split;
    let r_end = min(r_begin + p.rows_per_split, p.n * p.oh);
    let pad = i32(p.pad);
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    // acc[i]: output channel o0 + i, components over q0 .. q0 + 3.
    var acc: array<vec4<f32>, 4>;
    for (var r = r_begin; r < r_end; r++) {
        let n = r / p.oh;
        let oy = r % p.oh;
        let iy = vec4<i32>(i32(oy * p.stride)) + kyv - vec4<i32>(pad);
        let row_ok = select(vec4<bool>(false), (iy < hi), (iy >= vec4<i32>(0)));
        let xrow = vec4<u32>(n * p.c * hw) + cbase + vec4<u32>(clamp(iy, vec4<i32>(0), hi - 1)) * p.w;
        let gbase = (vec4<u32>(n * p.o) + ov) * ohw + oy * p.ow;
        for (var ox = 0u; ox < p.ow; ox++) {
            let ix = vec4<i32>(i32(ox * p.stride)) + kxv - vec4<i32>(pad);
            // Componentwise row_ok && 0 <= ix < W (select, as naga has no vector &&).
            let ok = select(vec4<bool>(false), select(vec4<bool>(false), (ix < wi), (ix >= vec4<i32>(0))), row_ok);
            let xi = xrow + vec4<u32>(clamp(ix, vec4<i32>(0), wi - 1));
            let xv = select(vec4<f32>(0.0), vec4<f32>(in0[xi.x], in0[xi.y], in0[xi.z], in0[xi.w]), ok);
            acc[0] = fma(vec4<f32>(in1[gbase.x + ox]), xv, acc[0]);
            acc[1] = fma(vec4<f32>(in1[gbase.y + ox]), xv, acc[1]);
            acc[2] = fma(vec4<f32>(in1[gbase.z + ox]), xv, acc[2]);
            acc[3] = fma(vec4<f32>(in1[gbase.w + ox]), xv, acc[3]);
        }
    }
    let obase = split * p.o * nq;
    for (var i = 0u; i < 4u; i++) {
        let o = o0 + i;
        if (o >= p.o) { break; }
        for (var j = 0u; j < 4u; j++) {
            let q = q0 + j;
            if (q >= nq) { break; }
            out0[obase + o * nq + q] = acc[i][j];
        }
    }
}

// Weight gradient of a 3x3 stride-1 pad-1 convolution: each invocation owns all 9 taps of
// BW_OT output x BW_CT input channels (BW_OT * BW_CT * 9 scalar accumulators, 576 at 8 x 8)
// and walks the rows (n, oy) of its split four output pixels at a time: per step it loads 4 gy
// values per output channel (the same for every invocation of the workgroup) and a 3 x 6
// input patch per input channel, then accumulates dot products. Lanes: blocks of BW_CT input channels; gid.z:
// split * ceil(O / BW_OT) + output-channel block; out0[split * O * C * 9 + (o * C + c) * 9 + k].
@compute @workgroup_size(LANE_WG)
fn conv2d_bwd_weight_3x3(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let oblocks = (p.o + BW_OT - 1u) / BW_OT;
    let split = gid.z / oblocks;
    let o0 = (gid.z % oblocks) * BW_OT;
    let c0 = t * BW_CT;
    let hw = p.h * p.w;
    let wlast = i32(p.w) - 1;
    let r_begin = split * p.rows_per_split;
    let r_end = min(r_begin + p.rows_per_split, p.n * p.h);
    var acc: array<f32, BW_OT * BW_CT * 9u>;
    for (var r = r_begin; r < r_end; r++) {
        let n = r / p.h;
        let oy = r % p.h;
        for (var ox0 = 0u; ox0 < p.w; ox0 += 4u) {
            var g: array<vec4<f32>, BW_OT>;
            for (var oi = 0u; oi < BW_OT; oi++) {
                let gb = ((n * p.o + min(o0 + oi, p.o - 1u)) * p.h + oy) * p.w;
                var v: vec4<f32>;
                for (var e = 0u; e < 4u; e++) {
                    let ox = ox0 + e;
                    v[e] = select(0.0, in1[gb + min(ox, p.w - 1u)], ox < p.w && o0 + oi < p.o);
                }
                g[oi] = v;
            }
            for (var ci = 0u; ci < BW_CT; ci++) {
                let plane = (n * p.c + min(c0 + ci, p.c - 1u)) * hw;
                for (var ky = 0u; ky < 3u; ky++) {
                    let iy = i32(oy + ky) - 1;
                    let rowok = iy >= 0 && iy < i32(p.h);
                    let rb = plane + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w;
                    var seg: array<f32, 6>;
                    for (var j = 0u; j < 6u; j++) {
                        let ix = i32(ox0 + j) - 1;
                        seg[j] = select(0.0, in0[rb + u32(clamp(ix, 0, wlast))], rowok && ix >= 0 && ix <= wlast);
                    }
                    let x0 = vec4<f32>(seg[0], seg[1], seg[2], seg[3]);
                    let x1 = vec4<f32>(seg[1], seg[2], seg[3], seg[4]);
                    let x2 = vec4<f32>(seg[2], seg[3], seg[4], seg[5]);
                    for (var oi = 0u; oi < BW_OT; oi++) {
                        let a = (oi * BW_CT + ci) * 9u + ky * 3u;
                        acc[a] += dot(g[oi], x0);
                        acc[a + 1u] += dot(g[oi], x1);
                        acc[a + 2u] += dot(g[oi], x2);
                    }
                }
            }
        }
    }
    let obase = split * p.o * p.c * 9u;
    for (var oi = 0u; oi < BW_OT; oi++) {
        let o = o0 + oi;
        if (o >= p.o) { break; }
        for (var ci = 0u; ci < BW_CT; ci++) {
            let c = c0 + ci;
            if (c >= p.c) { break; }
            for (var k = 0u; k < 9u; k++) {
                out0[obase + (o * p.c + c) * 9u + k] = acc[(oi * BW_CT + ci) * 9u + k];
            }
        }
    }
}

// gb[o] = sum of gy[n, o, :, :]. Lanes: output channel o; gid.z: split, summing rows (n, oy)
// [s * rows_per_split, (s + 1) * rows_per_split) into out0[s * O + o].
@compute @workgroup_size(LANE_WG)
fn conv2d_bwd_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = lane(gid, nwg);
    if (o >= p.o) { return; }
    let split = gid.z;
    let r_begin = split * p.rows_per_split;
    let r_end = min(r_begin + p.rows_per_split, p.n * p.oh);
    var acc = vec4<f32>(0.0);
    var tail = 0.0;
    let ow4 = p.ow / 4u;
    for (var r = r_begin; r < r_end; r++) {
        let n = r / p.oh;
        let oy = r % p.oh;
        let base = ((n * p.o + o) * p.oh + oy) * p.ow;
        for (var x4 = 0u; x4 < ow4; x4++) {
            let b = base + x4 * 4u;
            acc += vec4<f32>(in0[b], in0[b + 1u], in0[b + 2u], in0[b + 3u]);
        }
        for (var x = ow4 * 4u; x < p.ow; x++) {
            tail += in0[base + x];
        }
    }
    out0[split * p.o + o] = (acc.x + acc.y) + (acc.z + acc.w) + tail;
}

// out0[i] = sum over s < splits of in0[s * total + i], for i < total.
@compute @workgroup_size(LANE_WG)
fn conv2d_sum_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.total) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        acc += in0[s * p.total + i];
    }
    out0[i] = acc;
}

// out0[c, o, ky, kx] = in0[o, c, KH - 1 - ky, KW - 1 - kx], for total = O C KH KW elements.
@compute @workgroup_size(LANE_WG)
fn conv2d_flip_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lane(gid, nwg);
    if (i >= p.total) { return; }
    let ksz = p.kh * p.kw;
    let k = i % ksz;
    let co = i / ksz;
    let o = co % p.o;
    let c = co / p.o;
    out0[i] = in0[(o * p.c + c) * ksz + (ksz - 1u - k)];
}
