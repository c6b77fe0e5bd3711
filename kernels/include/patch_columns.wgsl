// Patch columns of the lowered convolutions (conv2d_lower.wgsl, conv2d_im2col.wgsl): column j
// of a chunk's patch matrix is output pixel (n0 + n, oy, ox) with j = (n OH + oy) OW + ox,
// n < nb; columns from nb OH OW up to npc are padding.

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
