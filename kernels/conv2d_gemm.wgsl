// Register-tiled products of lowered convolutions (src/ops/conv.rs drives them). No workgroup
// memory: lavapipe vectorises per-invocation register work. Lanes t = gid.x + gid.y *
// num_workgroups.x * LANE_WG are flattened so that every lane of a SIMD batch is live whatever the
// shape (the 8 x 8 workgroups of matmul.wgsl idle most lanes when one side of C is small).
//
// Tiles are structs of mat4x4 accumulators updated by whole mat4x4 products (as matmul.wgsl):
// function-scope arrays indexed in loops end up in scratch memory on lavapipe and run ~10x
// slower.
//
// gemm_fwd8 / gemm_fwd16: C[r, j] = sum over k < K of a0[k, r] b0[k, j] (+ a1[k, r] b1[k, j]
//   with FLAG_SECOND_PRODUCT), a stored [K, rp], b stored [K, npc] (K, rp and npc multiples of 4; padding
//   zero). Each invocation owns 8 or 16 rows (gid.z picks the row block, so the a loads are the
//   same for the whole workgroup) x 16 columns (lanes). Store mode
//   (FLAG_PLAIN_OUTPUT clear): rows are output channels o < O and columns pixels (n, oy, ox) of
//   images n0 + n < n0 + nb: out = y [N, O, OH, OW] with + bias[o] (FLAG_BIAS), ReLU
//   (FLAG_RELU), and zero where mask (binding 6, the forward output) is <= 0 (FLAG_MASK).
//   FLAG_PLAIN_OUTPUT: out is a plain [rows, npc] matrix (rows = the o field).
// gemm_bwd_weight8 / 16: partial[slot0 + s, q, o] = sum over k in split s of patches[q, k] g[o, k],
//   patches [Q, K] and g [op, K] both k-contiguous (K = npc). The reduction is long and the
//   product small, so split s covers vec4 steps [s k4_split, (s + 1) k4_split) and many splits
//   run side by side (src/ops/conv.rs sums them). Each invocation owns 16 q x 8 or 16 o;
//   lanes run over (split, tile) with the tile fastest.
// Bindings: 1 a0 / patches, 2 b0 / g, 3 a1, 4 b1, 5 bias, 6 mask (read); 7 out (read_write).

@group(0) @binding(1) var<storage, read> a0: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b0: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> a1: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> b1: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

// Two 4-row blocks (x, y) by four 4-column groups (0..3).
struct T8 {
    x0: mat4x4<f32>, x1: mat4x4<f32>, x2: mat4x4<f32>, x3: mat4x4<f32>,
    y0: mat4x4<f32>, y1: mat4x4<f32>, y2: mat4x4<f32>, y3: mat4x4<f32>,
}

// t.x_e += b_e * ax, t.y_e += b_e * ay.
fn upd_right(t: ptr<function, T8>, ax: mat4x4<f32>, ay: mat4x4<f32>,
             b0_: mat4x4<f32>, b1_: mat4x4<f32>, b2_: mat4x4<f32>, b3_: mat4x4<f32>) {
    (*t).x0 += b0_ * ax; (*t).x1 += b1_ * ax; (*t).x2 += b2_ * ax; (*t).x3 += b3_ * ax;
    (*t).y0 += b0_ * ay; (*t).y1 += b1_ * ay; (*t).y2 += b2_ * ay; (*t).y3 += b3_ * ay;
}

// t.x_e += ax * b_e, t.y_e += ay * b_e.
fn upd_left(t: ptr<function, T8>, ax: mat4x4<f32>, ay: mat4x4<f32>,
            b0_: mat4x4<f32>, b1_: mat4x4<f32>, b2_: mat4x4<f32>, b3_: mat4x4<f32>) {
    (*t).x0 += ax * b0_; (*t).x1 += ax * b1_; (*t).x2 += ax * b2_; (*t).x3 += ax * b3_;
    (*t).y0 += ay * b0_; (*t).y1 += ay * b1_; (*t).y2 += ay * b2_; (*t).y3 += ay * b3_;
}

// ---- gemm_fwd ----

// Four consecutive b rows k.. at vec4 column j4 (clamped), as columns; src 1 reads b1.
fn fwd_b(src: u32, k: u32, j4: u32, n4: u32) -> mat4x4<f32> {
    let c = min(j4, n4 - 1u);
    if (src == 0u) {
        return mat4x4<f32>(b0[k * n4 + c], b0[(k + 1u) * n4 + c], b0[(k + 2u) * n4 + c], b0[(k + 3u) * n4 + c]);
    }
    return mat4x4<f32>(b1[k * n4 + c], b1[(k + 1u) * n4 + c], b1[(k + 2u) * n4 + c], b1[(k + 3u) * n4 + c]);
}

// a rows k.. at vec4 row group r4 (clamped), transposed: column c is row 4 r4 + c over k.
fn fwd_a(src: u32, k: u32, r4: u32, rp4: u32) -> mat4x4<f32> {
    let c = min(r4, rp4 - 1u);
    if (src == 0u) {
        return transpose(mat4x4<f32>(a0[k * rp4 + c], a0[(k + 1u) * rp4 + c], a0[(k + 2u) * rp4 + c], a0[(k + 3u) * rp4 + c]));
    }
    return transpose(mat4x4<f32>(a1[k * rp4 + c], a1[(k + 1u) * rp4 + c], a1[(k + 2u) * rp4 + c], a1[(k + 3u) * rp4 + c]));
}

// Accumulates 8 rows from row group r4 over all k of operand pair src.
fn fwd_acc(src: u32, t: ptr<function, T8>, r4: u32, j4: u32) {
    let n4 = p.npc / 4u;
    let rp4 = p.op / 4u;
    for (var k = 0u; k < p.q; k += 4u) {
        upd_right(t, fwd_a(src, k, r4, rp4), fwd_a(src, k, r4 + 1u, rp4),
                  fwd_b(src, k, j4, n4), fwd_b(src, k, j4 + 1u, n4), fwd_b(src, k, j4 + 2u, n4), fwd_b(src, k, j4 + 3u, n4));
    }
}

// Stores one block: column c is row r0 + c, components columns 4 j4 ... (the image and pixel
// of the first column are divided out once; integer division is slow on lavapipe).
fn fwd_store(m: mat4x4<f32>, r0: u32, j4: u32) {
    let plain = (p.flags & FLAG_PLAIN_OUTPUT) != 0u;
    let cols = p.nb * p.ohw;
    let j0 = j4 * 4u;
    let n_first = j0 / p.ohw;
    let pix_first = j0 % p.ohw;
    for (var c = 0u; c < 4u; c++) {
        let r = r0 + c;
        if (r >= p.o) { return; }
        var b = 0.0;
        if ((p.flags & FLAG_BIAS) != 0u) { b = bias[r]; }
        let v4 = m[c] + vec4<f32>(b);
        var n = p.n0 + n_first;
        var pix = pix_first;
        for (var l = 0u; l < 4u; l++) {
            let j = j0 + l;
            if (plain) {
                if (j < p.npc) { out[r * p.npc + j] = v4[l]; }
                continue;
            }
            if (j >= cols) { break; }
            let yi = (n * p.o + r) * p.ohw + pix;
            var v = v4[l];
            if ((p.flags & FLAG_RELU) != 0u) { v = max(v, 0.0); }
            if ((p.flags & FLAG_MASK) != 0u && mask[yi] <= 0.0) { v = 0.0; }
            out[yi] = v;
            pix += 1u;
            if (pix == p.ohw) {
                pix = 0u;
                n += 1u;
            }
        }
    }
}

fn fwd_store8(t: ptr<function, T8>, r4: u32, j4: u32) {
    let r0 = r4 * 4u;
    fwd_store((*t).x0, r0, j4); fwd_store((*t).x1, r0, j4 + 1u);
    fwd_store((*t).x2, r0, j4 + 2u); fwd_store((*t).x3, r0, j4 + 3u);
    fwd_store((*t).y0, r0 + 4u, j4); fwd_store((*t).y1, r0 + 4u, j4 + 1u);
    fwd_store((*t).y2, r0 + 4u, j4 + 2u); fwd_store((*t).y3, r0 + 4u, j4 + 3u);
}

@compute @workgroup_size(LANE_WG)
fn gemm_fwd8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let r4 = gid.z * 2u;
    let j4 = t * 4u;
    var acc: T8;
    fwd_acc(0u, &acc, r4, j4);
    if ((p.flags & FLAG_SECOND_PRODUCT) != 0u) { fwd_acc(1u, &acc, r4, j4); }
    fwd_store8(&acc, r4, j4);
}

@compute @workgroup_size(LANE_WG)
fn gemm_fwd16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let r4 = gid.z * 4u;
    let j4 = t * 4u;
    let n4 = p.npc / 4u;
    let rp4 = p.op / 4u;
    var lo: T8;
    var hi: T8;
    for (var src = 0u; src < 2u; src++) {
        if (src == 1u && (p.flags & FLAG_SECOND_PRODUCT) == 0u) { break; }
        for (var k = 0u; k < p.q; k += 4u) {
            let bm0 = fwd_b(src, k, j4, n4);
            let bm1 = fwd_b(src, k, j4 + 1u, n4);
            let bm2 = fwd_b(src, k, j4 + 2u, n4);
            let bm3 = fwd_b(src, k, j4 + 3u, n4);
            upd_right(&lo, fwd_a(src, k, r4, rp4), fwd_a(src, k, r4 + 1u, rp4), bm0, bm1, bm2, bm3);
            upd_right(&hi, fwd_a(src, k, r4 + 2u, rp4), fwd_a(src, k, r4 + 3u, rp4), bm0, bm1, bm2, bm3);
        }
    }
    fwd_store8(&lo, r4, j4);
    fwd_store8(&hi, r4 + 2u, j4);
}

// ---- gemm_bwd_weight ----

// Rows q0.. (4 of them, clamped) of a k-contiguous matrix at vec4 step kk, as columns.
fn bw_p(q0: u32, kk: u32, k4: u32) -> mat4x4<f32> {
    let last = p.q - 1u;
    return mat4x4<f32>(a0[min(q0, last) * k4 + kk], a0[min(q0 + 1u, last) * k4 + kk],
                       a0[min(q0 + 2u, last) * k4 + kk], a0[min(q0 + 3u, last) * k4 + kk]);
}

// g rows o0.. at vec4 step kk, transposed: column k, component o.
fn bw_g(o0: u32, kk: u32, k4: u32) -> mat4x4<f32> {
    let last = p.op - 1u;
    return transpose(mat4x4<f32>(b0[min(o0, last) * k4 + kk], b0[min(o0 + 1u, last) * k4 + kk],
                                 b0[min(o0 + 2u, last) * k4 + kk], b0[min(o0 + 3u, last) * k4 + kk]));
}

// Stores block m (column c is q = q0 + c, component r is o = o0 + r) of split `split`.
fn bw_store(m: mat4x4<f32>, split: u32, q0: u32, o0: u32) {
    if (o0 >= p.op) { return; }
    let base = (p.slot0 + split) * p.q;
    for (var c = 0u; c < 4u; c++) {
        let q = q0 + c;
        if (q >= p.q) { return; }
        let v = m[c];
        let i = (base + q) * p.op + o0;
        out[i] = v.x;
        out[i + 1u] = v.y;
        out[i + 2u] = v.z;
        out[i + 3u] = v.w;
    }
}

// x / y: o blocks o0, o0 + 4; 0..3: q blocks q0 + 4 e.
fn bw_store8(t: ptr<function, T8>, split: u32, q0: u32, o0: u32) {
    bw_store((*t).x0, split, q0, o0); bw_store((*t).x1, split, q0 + 4u, o0);
    bw_store((*t).x2, split, q0 + 8u, o0); bw_store((*t).x3, split, q0 + 12u, o0);
    bw_store((*t).y0, split, q0, o0 + 4u); bw_store((*t).y1, split, q0 + 4u, o0 + 4u);
    bw_store((*t).y2, split, q0 + 8u, o0 + 4u); bw_store((*t).y3, split, q0 + 12u, o0 + 4u);
}

@compute @workgroup_size(LANE_WG)
fn gemm_bwd_weight8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let ntiles = p.tiles_q * p.tiles_o;
    let tile = t % ntiles;
    let split = t / ntiles;
    let q0 = (tile / p.tiles_o) * 16u;
    let o0 = (tile % p.tiles_o) * 8u;
    let k4 = p.npc / 4u;
    let kb = split * p.k4_split;
    let ke = min(kb + p.k4_split, k4);
    var acc: T8;
    for (var kk = kb; kk < ke; kk++) {
        upd_left(&acc, bw_g(o0, kk, k4), bw_g(o0 + 4u, kk, k4),
                 bw_p(q0, kk, k4), bw_p(q0 + 4u, kk, k4), bw_p(q0 + 8u, kk, k4), bw_p(q0 + 12u, kk, k4));
    }
    bw_store8(&acc, split, q0, o0);
}

@compute @workgroup_size(LANE_WG)
fn gemm_bwd_weight16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = lane(gid, nwg);
    if (t >= p.total) { return; }
    let ntiles = p.tiles_q * p.tiles_o;
    let tile = t % ntiles;
    let split = t / ntiles;
    let q0 = (tile / p.tiles_o) * 16u;
    let o0 = (tile % p.tiles_o) * 16u;
    let k4 = p.npc / 4u;
    let kb = split * p.k4_split;
    let ke = min(kb + p.k4_split, k4);
    var lo: T8;
    var hi: T8;
    for (var kk = kb; kk < ke; kk++) {
        let pm0 = bw_p(q0, kk, k4);
        let pm1 = bw_p(q0 + 4u, kk, k4);
        let pm2 = bw_p(q0 + 8u, kk, k4);
        let pm3 = bw_p(q0 + 12u, kk, k4);
        upd_left(&lo, bw_g(o0, kk, k4), bw_g(o0 + 4u, kk, k4), pm0, pm1, pm2, pm3);
        upd_left(&hi, bw_g(o0 + 8u, kk, k4), bw_g(o0 + 12u, kk, k4), pm0, pm1, pm2, pm3);
    }
    bw_store8(&lo, split, q0, o0);
    bw_store8(&hi, split, q0, o0 + 8u);
}
