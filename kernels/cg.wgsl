// The device-resident conjugate gradients (src/ops/cg.rs, src/geodesic/device_cg.rs): their
// scalars live in a state vector (indices CG_*), updated by one invocation between the vector
// ops, so that no scalar is read back inside the CG loop. Steihaug–Toint: the model is
// ½ zᵀ B z + cᵀ z with B = 2G; r = B z + c, d the search direction. CG on (G + μI) x = b
// (the multiplier form): r = b − (G + μI) x, p the search direction.
// Bindings: the scalar entries read dots from a, b, c and update the state, bound as `dst`;
// the vector entries read x (a) and the state (b) and update y, bound as `dst`, in place.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// NaN, tested on the bits (a compiler may assume that floats are never NaN).
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// The step along d, from a = dᵀ G d, b = dᵀ d, c = zᵀ d: α = rr / dᵀBd, or, where the
// curvature is not positive or z + α d leaves the ball, the τ ≥ 0 with ‖z + τ d‖ = ε (then the
// solve ends after this iteration's updates, on the boundary). Counts the iteration.
@compute @workgroup_size(1)
fn steihaug_alpha() {
    dst[CG_ITERATIONS] += 1.0;
    let dbd = 2.0 * a[0];
    let dd = b[0];
    let zd = c[0];
    let zz = dst[CG_ZZ];
    let eps2 = dst[CG_EPS2];
    let alpha = dst[CG_RR] / dbd;
    if (dbd <= 0.0 || is_nan(dbd) || zz + 2.0 * alpha * zd + alpha * alpha * dd >= eps2) {
        let gap = max(eps2 - zz, 0.0);
        let root = sqrt(zd * zd + dd * gap);
        var tau = (root - zd) / dd;
        if (zd > 0.0) { tau = gap / (zd + root); }
        dst[CG_STEP] = tau;
        dst[CG_BOUNDARY] = 1.0;
        dst[CG_ACTIVE] = 0.0;
    } else {
        dst[CG_STEP] = alpha;
    }
}

// After z and r moved, from a = ‖z‖², b = ‖r‖²: ends the solve once ‖r‖² ≤ stop, else sets
// β = ‖r_new‖² / ‖r‖². Nothing once on the boundary.
@compute @workgroup_size(1)
fn steihaug_beta() {
    if (dst[CG_BOUNDARY] != 0.0) { return; }
    let rr_new = b[0];
    dst[CG_ZZ] = a[0];
    if (rr_new <= dst[CG_STOP]) {
        dst[CG_ACTIVE] = 0.0;
        return;
    }
    dst[CG_BETA] = rr_new / dst[CG_RR];
    dst[CG_RR] = rr_new;
}

// The state of a solve from a = ‖b‖² (r = b at x = 0): ‖r‖² and the residual target
// scale ‖b‖² (scale = tol²).
@compute @workgroup_size(1)
fn cg_init() {
    dst[CG_RR] = a[0];
    dst[CG_STOP] = p.scale * a[0];
}

// CG on (G + μI) x = b, from a = pᵀ(G + μI)p: the step α = ‖r‖² / pᵀ(G + μI)p, or, for
// non-positive curvature, the end (CG_END_NEGATIVE_CURVATURE) with a zero step. Counts the
// iteration.
@compute @workgroup_size(1)
fn cg_alpha() {
    dst[CG_ITERATIONS] += 1.0;
    let pap = a[0];
    if (pap <= 0.0 || is_nan(pap)) {
        dst[CG_STEP] = 0.0;
        dst[CG_END] = f32(CG_END_NEGATIVE_CURVATURE);
        dst[CG_ACTIVE] = 0.0;
        return;
    }
    dst[CG_STEP] = dst[CG_RR] / pap;
}

// CG on (G + μI) x = b, after x and r moved, from a = ‖x‖², b = ‖r‖²: the end when x left the
// ball (‖x‖² > CG_EPS2 ≥ 0; CG_END_LEFT_BALL) or ‖r‖² ≤ stop (CG_END_CONVERGED), else β.
// Nothing once ended.
@compute @workgroup_size(1)
fn cg_beta() {
    if (dst[CG_END] != 0.0) { return; }
    dst[CG_ZZ] = a[0];
    let eps2 = dst[CG_EPS2];
    if (eps2 >= 0.0 && a[0] > eps2) {
        dst[CG_END] = f32(CG_END_LEFT_BALL);
        dst[CG_ACTIVE] = 0.0;
        return;
    }
    let rr_new = b[0];
    if (rr_new <= dst[CG_STOP]) {
        dst[CG_END] = f32(CG_END_CONVERGED);
        dst[CG_ACTIVE] = 0.0;
        return;
    }
    dst[CG_BETA] = rr_new / dst[CG_RR];
    dst[CG_RR] = rr_new;
}

// y += scale * b[slot] * a (b: the state).
@compute @workgroup_size(ELEMENT_WG)
fn axpy_state(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] += p.scale * b[p.slot] * a[i];
}

// y = scale * a + b[slot] * y (b: the state).
@compute @workgroup_size(ELEMENT_WG)
fn xpby_state(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] = p.scale * a[i] + b[p.slot] * dst[i];
}
