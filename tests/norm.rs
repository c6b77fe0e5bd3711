//! BatchNorm and dropout: the CPU reference against an independent f64 re-implementation and
//! central finite differences of it, the adjoint and Hessian-symmetry identities, every GPU
//! kernel against the CPU reference, dropout masks, and argument errors.

mod common;
use common::*;
use geopath::ops::dropout::dropout;
use geopath::ops::norm::{
    batchnorm_backward, batchnorm_backward_jvp, batchnorm_eval, batchnorm_eval_backward, batchnorm_jvp,
    batchnorm_train, batchnorm_update_running,
};
use geopath::{Device, Error, Tensor};

// ---------------------------------------------------------------------------------------------
// An independent f64 re-implementation (channel-major loops, written from the definitions).

/// `(n, c, hw)` of a 4-D or 2-D shape.
fn geom(shape: &[usize]) -> (usize, usize, usize) {
    match *shape {
        [n, c, h, w] => (n, c, h * w),
        [n, c] => (n, c, 1),
        _ => panic!("bad shape {shape:?}"),
    }
}

/// The flat indices of channel `c`.
fn idx(shape: &[usize], c: usize) -> Vec<usize> {
    let (n, cs, hw) = geom(shape);
    let mut v = Vec::new();
    for s in 0..n {
        for j in 0..hw {
            v.push((s * cs + c) * hw + j);
        }
    }
    v
}

/// Training-mode forward in f64: `(y, mean, invstd)`.
fn bn_f64(shape: &[usize], x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (_, cs, _) = geom(shape);
    let mut y = vec![0.0; x.len()];
    let (mut means, mut invstds) = (vec![0.0; cs], vec![0.0; cs]);
    for c in 0..cs {
        let ix = idx(shape, c);
        let m = ix.len() as f64;
        let mean = ix.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = ix.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
        let is = 1.0 / (var + eps).sqrt();
        for &i in &ix {
            y[i] = gamma[c] * (x[i] - mean) * is + beta[c];
        }
        means[c] = mean;
        invstds[c] = is;
    }
    (y, means, invstds)
}

/// Training-mode backward in f64 (statistics from `x`): `(gx, ggamma, gbeta)`.
fn bn_backward_f64(shape: &[usize], gy: &[f64], x: &[f64], gamma: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (_, cs, _) = geom(shape);
    let (_, means, invstds) = bn_f64(shape, x, gamma, &vec![0.0; cs], eps);
    let mut gx = vec![0.0; x.len()];
    let (mut gg, mut gb) = (vec![0.0; cs], vec![0.0; cs]);
    for c in 0..cs {
        let ix = idx(shape, c);
        let m = ix.len() as f64;
        let xh = |i: usize| (x[i] - means[c]) * invstds[c];
        gb[c] = ix.iter().map(|&i| gy[i]).sum();
        gg[c] = ix.iter().map(|&i| gy[i] * xh(i)).sum();
        for &i in &ix {
            gx[i] = gamma[c] * invstds[c] * (gy[i] - gb[c] / m - xh(i) * gg[c] / m);
        }
    }
    (gx, gg, gb)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&a| a as f32).collect()
}

/// `a + h v`.
fn axpy(a: &[f64], h: f64, v: &[f64]) -> Vec<f64> {
    a.iter().zip(v).map(|(a, v)| a + h * v).collect()
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn cpu(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(&Device::Reference, shape, v.to_vec()).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec().unwrap()
}

/// Asserts `|got - want| <= tol * max(1, max |want|)` elementwise (for long reductions and
/// values that cancel).
fn assert_scaled(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
    assert_close(what, got, want, 0.0, tol * scale);
}

/// Random test data for one shape: x (values `offset + U(-1, 1)`), gamma, beta, gy and
/// tangents of each.
struct Data {
    shape: Vec<usize>,
    c: usize,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    gy: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    dgy: Vec<f32>,
}

impl Data {
    fn new(rng: &mut Rng, shape: &[usize], offset: f32) -> Data {
        let n: usize = shape.iter().product();
        let c = shape[1];
        Data {
            shape: shape.to_vec(),
            c,
            x: rng.vec(n).iter().map(|v| v + offset).collect(),
            gamma: rng.vec(c).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: rng.vec(c),
            gy: rng.vec(n),
            dx: rng.vec(n),
            dgamma: rng.vec(c),
            dbeta: rng.vec(c),
            dgy: rng.vec(n),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU reference.

const CPU_SHAPES: &[&[usize]] = &[&[3, 4, 3, 3], &[6, 3], &[2, 2, 1, 5], &[1, 2, 2, 3]];

#[test]
fn cpu_train_matches_f64_definition() {
    let mut rng = Rng::new(1);
    for (k, shape) in CPU_SHAPES.iter().enumerate() {
        for (offset, eps) in [(0.0, 1e-5f32), (20.0, 0.1)] {
            let d = Data::new(&mut rng, shape, offset);
            let (y, m, is) =
                batchnorm_train(&cpu(shape, &d.x), &cpu(&[d.c], &d.gamma), &cpu(&[d.c], &d.beta), eps).unwrap();
            let (wy, wm, wis) = bn_f64(shape, &f64s(&d.x), &f64s(&d.gamma), &f64s(&d.beta), eps as f64);
            let what = format!("{shape:?} offset {offset} (case {k})");
            assert_close(&format!("y {what}"), &host(&y), &f32s(&wy), 1e-6, 1e-6);
            assert_close(&format!("mean {what}"), &host(&m), &f32s(&wm), 1e-6, 1e-6);
            assert_close(&format!("invstd {what}"), &host(&is), &f32s(&wis), 1e-6, 1e-6);
            // Each output channel has mean beta.
            let yv = host(&y);
            for c in 0..d.c {
                let ix = idx(shape, c);
                let mean = ix.iter().map(|&i| yv[i] as f64).sum::<f64>() / ix.len() as f64;
                assert!(
                    (mean - d.beta[c] as f64).abs() < 1e-5,
                    "{what}: channel {c} output mean {mean} vs beta {}",
                    d.beta[c]
                );
            }
        }
    }
}

#[test]
fn cpu_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    let h = 1e-5;
    for shape in CPU_SHAPES {
        let eps = 1e-3f32;
        let d = Data::new(&mut rng, shape, 0.5);
        let (_, m, is) =
            batchnorm_train(&cpu(shape, &d.x), &cpu(&[d.c], &d.gamma), &cpu(&[d.c], &d.beta), eps).unwrap();
        let (gx, gg, gb) =
            batchnorm_backward(&cpu(shape, &d.gy), &cpu(shape, &d.x), &cpu(&[d.c], &d.gamma), &m, &is).unwrap();
        // Loss <r, y> with r = gy, differentiated coordinate by coordinate in f64.
        let (x, g, b, r) = (f64s(&d.x), f64s(&d.gamma), f64s(&d.beta), f64s(&d.gy));
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot64(&r, &bn_f64(shape, x, g, b, eps as f64).0);
        let unit = |n: usize, i: usize| {
            let mut e = vec![0.0; n];
            e[i] = 1.0;
            e
        };
        let fd_x: Vec<f32> = (0..x.len())
            .map(|i| {
                let e = unit(x.len(), i);
                ((loss(&axpy(&x, h, &e), &g, &b) - loss(&axpy(&x, -h, &e), &g, &b)) / (2.0 * h)) as f32
            })
            .collect();
        let fd_g: Vec<f32> = (0..d.c)
            .map(|i| {
                let e = unit(d.c, i);
                ((loss(&x, &axpy(&g, h, &e), &b) - loss(&x, &axpy(&g, -h, &e), &b)) / (2.0 * h)) as f32
            })
            .collect();
        let fd_b: Vec<f32> = (0..d.c)
            .map(|i| {
                let e = unit(d.c, i);
                ((loss(&x, &g, &axpy(&b, h, &e)) - loss(&x, &g, &axpy(&b, -h, &e))) / (2.0 * h)) as f32
            })
            .collect();
        let what = format!("{shape:?}");
        assert_close(&format!("gx {what}"), &host(&gx), &fd_x, 1e-4, 2e-5);
        assert_close(&format!("ggamma {what}"), &host(&gg), &fd_g, 1e-4, 2e-5);
        assert_close(&format!("gbeta {what}"), &host(&gb), &fd_b, 1e-4, 2e-5);
    }
}

#[test]
fn cpu_jvp_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let h = 1e-5;
    for shape in CPU_SHAPES {
        for eps in [1e-5f32, 0.2] {
            let d = Data::new(&mut rng, shape, -0.3);
            let c = d.c;
            let (y, dy) = batchnorm_jvp(
                &cpu(shape, &d.x),
                &cpu(shape, &d.dx),
                &cpu(&[c], &d.gamma),
                &cpu(&[c], &d.dgamma),
                &cpu(&[c], &d.beta),
                &cpu(&[c], &d.dbeta),
                eps,
            )
            .unwrap();
            let f = |t: f64| {
                bn_f64(
                    shape,
                    &axpy(&f64s(&d.x), t, &f64s(&d.dx)),
                    &axpy(&f64s(&d.gamma), t, &f64s(&d.dgamma)),
                    &axpy(&f64s(&d.beta), t, &f64s(&d.dbeta)),
                    eps as f64,
                )
                .0
            };
            let (p, m) = (f(h), f(-h));
            let want: Vec<f32> = p.iter().zip(&m).map(|(p, m)| ((p - m) / (2.0 * h)) as f32).collect();
            let what = format!("{shape:?} eps {eps}");
            assert_close(&format!("dy {what}"), &host(&dy), &want, 1e-4, 2e-5);
            let (y_train, _, _) =
                batchnorm_train(&cpu(shape, &d.x), &cpu(&[c], &d.gamma), &cpu(&[c], &d.beta), eps).unwrap();
            assert_close(&format!("y {what}"), &host(&y), &host(&y_train), 1e-6, 1e-6);
        }
    }
}

#[test]
fn cpu_backward_jvp_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let h = 1e-5;
    for shape in CPU_SHAPES {
        let eps = 1e-2f32;
        let d = Data::new(&mut rng, shape, 0.0);
        let c = d.c;
        let (dgx, dgg, dgb) = batchnorm_backward_jvp(
            &cpu(shape, &d.gy),
            &cpu(shape, &d.dgy),
            &cpu(shape, &d.x),
            &cpu(shape, &d.dx),
            &cpu(&[c], &d.gamma),
            &cpu(&[c], &d.dgamma),
            eps,
        )
        .unwrap();
        // The f64 backward re-implementation agrees with the crate's backward ...
        let (_, m, is) = batchnorm_train(&cpu(shape, &d.x), &cpu(&[c], &d.gamma), &cpu(&[c], &d.beta), eps).unwrap();
        let (gx, gg, gb) =
            batchnorm_backward(&cpu(shape, &d.gy), &cpu(shape, &d.x), &cpu(&[c], &d.gamma), &m, &is).unwrap();
        let (wgx, wgg, wgb) = bn_backward_f64(shape, &f64s(&d.gy), &f64s(&d.x), &f64s(&d.gamma), eps as f64);
        let what = format!("{shape:?}");
        assert_close(&format!("gx {what}"), &host(&gx), &f32s(&wgx), 1e-5, 1e-6);
        assert_close(&format!("ggamma {what}"), &host(&gg), &f32s(&wgg), 1e-5, 1e-6);
        assert_close(&format!("gbeta {what}"), &host(&gb), &f32s(&wgb), 1e-5, 1e-6);
        // ... and its central differences along (dgy, dx, dgamma) give the backward JVP.
        let f = |t: f64| {
            bn_backward_f64(
                shape,
                &axpy(&f64s(&d.gy), t, &f64s(&d.dgy)),
                &axpy(&f64s(&d.x), t, &f64s(&d.dx)),
                &axpy(&f64s(&d.gamma), t, &f64s(&d.dgamma)),
                eps as f64,
            )
        };
        let (p, mi) = (f(h), f(-h));
        let fd =
            |a: &[f64], b: &[f64]| -> Vec<f32> { a.iter().zip(b).map(|(a, b)| ((a - b) / (2.0 * h)) as f32).collect() };
        assert_close(&format!("dgx {what}"), &host(&dgx), &fd(&p.0, &mi.0), 1e-4, 2e-5);
        assert_close(&format!("dggamma {what}"), &host(&dgg), &fd(&p.1, &mi.1), 1e-4, 2e-5);
        assert_close(&format!("dgbeta {what}"), &host(&dgb), &fd(&p.2, &mi.2), 1e-4, 2e-5);

        // The same through the crate's own f32 ops (train + backward), coarse differences.
        let hf = 1e-2f32;
        let g32 = |t: f32| {
            let sh = |a: &[f32], v: &[f32]| -> Vec<f32> { a.iter().zip(v).map(|(a, v)| a + t * v).collect() };
            let (x, gm, gy) = (sh(&d.x, &d.dx), sh(&d.gamma, &d.dgamma), sh(&d.gy, &d.dgy));
            let (xt, gt) = (cpu(shape, &x), cpu(&[c], &gm));
            let (_, m, is) = batchnorm_train(&xt, &gt, &cpu(&[c], &d.beta), eps).unwrap();
            let (a, b, cc) = batchnorm_backward(&cpu(shape, &gy), &xt, &gt, &m, &is).unwrap();
            (host(&a), host(&b), host(&cc))
        };
        let (p, mi) = (g32(hf), g32(-hf));
        let fd32 = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(a, b)| (a - b) / (2.0 * hf)).collect() };
        assert_scaled(&format!("f32 dgx {what}"), &host(&dgx), &fd32(&p.0, &mi.0), 2e-2);
        assert_scaled(&format!("f32 dggamma {what}"), &host(&dgg), &fd32(&p.1, &mi.1), 2e-2);
        assert_scaled(&format!("f32 dgbeta {what}"), &host(&dgb), &fd32(&p.2, &mi.2), 2e-2);
    }
}

#[test]
fn cpu_adjoint_identity_and_hessian_symmetry() {
    let mut rng = Rng::new(5);
    for shape in CPU_SHAPES {
        let eps = 1e-3f32;
        let d = Data::new(&mut rng, shape, 0.1);
        let c = d.c;
        let (x, g, b) = (cpu(shape, &d.x), cpu(&[c], &d.gamma), cpu(&[c], &d.beta));
        // <r, J v> = <J^T r, v> with r = gy and v = (dx, dgamma, dbeta).
        let (_, dy) =
            batchnorm_jvp(&x, &cpu(shape, &d.dx), &g, &cpu(&[c], &d.dgamma), &b, &cpu(&[c], &d.dbeta), eps).unwrap();
        let (_, m, is) = batchnorm_train(&x, &g, &b, eps).unwrap();
        let (gx, gg, gb) = batchnorm_backward(&cpu(shape, &d.gy), &x, &g, &m, &is).unwrap();
        let lhs = dot64(&f64s(&d.gy), &f64s(&host(&dy)));
        let rhs = dot64(&f64s(&host(&gx)), &f64s(&d.dx))
            + dot64(&f64s(&host(&gg)), &f64s(&d.dgamma))
            + dot64(&f64s(&host(&gb)), &f64s(&d.dbeta));
        assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "{shape:?}: <r, Jv> = {lhs} vs <J^T r, v> = {rhs}");
        // The Hessian of <r, y> in (x, gamma), applied through the backward JVP, is symmetric.
        let zeros = vec![0.0f32; d.x.len()];
        let v2x = rng.vec(d.x.len());
        let v2g = rng.vec(c);
        let hv = |vx: &[f32], vg: &[f32]| {
            let (hx, hg, hb) = batchnorm_backward_jvp(
                &cpu(shape, &d.gy),
                &cpu(shape, &zeros),
                &x,
                &cpu(shape, vx),
                &g,
                &cpu(&[c], vg),
                eps,
            )
            .unwrap();
            assert!(host(&hb).iter().all(|&v| v.abs() < 1e-6), "beta row of H");
            (f64s(&host(&hx)), f64s(&host(&hg)))
        };
        let (h1x, h1g) = hv(&d.dx, &d.dgamma);
        let (h2x, h2g) = hv(&v2x, &v2g);
        let a = dot64(&f64s(&v2x), &h1x) + dot64(&f64s(&v2g), &h1g);
        let bb = dot64(&f64s(&d.dx), &h2x) + dot64(&f64s(&d.dgamma), &h2g);
        assert!((a - bb).abs() <= 1e-5 * (1.0 + a.abs()), "{shape:?}: <v2, H v1> = {a} vs <v1, H v2> = {bb}");
    }
}

#[test]
fn running_stats_update_formula() {
    let mut rng = Rng::new(6);
    let shape = [5, 3, 2, 3];
    let (eps, momentum) = (1e-3f32, 0.1f32);
    let d = Data::new(&mut rng, &shape, 2.0);
    let c = d.c;
    let (_, m, is) = batchnorm_train(&cpu(&shape, &d.x), &cpu(&[c], &d.gamma), &cpu(&[c], &d.beta), eps).unwrap();
    let rm: Vec<f32> = rng.vec(c);
    let rv: Vec<f32> = rng.vec(c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let count = 5 * 2 * 3;
    let (nm, nv) = batchnorm_update_running(&cpu(&[c], &rm), &cpu(&[c], &rv), &m, &is, count, momentum, eps).unwrap();
    let (mut want_m, mut want_v) = (vec![0.0f32; c], vec![0.0f32; c]);
    for ch in 0..c {
        let ix = idx(&shape, ch);
        let vals: Vec<f64> = ix.iter().map(|&i| d.x[i] as f64).collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let unbiased = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
        want_m[ch] = (0.9 * rm[ch] as f64 + 0.1 * mean) as f32;
        want_v[ch] = (0.9 * rv[ch] as f64 + 0.1 * unbiased) as f32;
    }
    assert_close("new running mean", &host(&nm), &want_m, 1e-6, 1e-6);
    assert_close("new running var", &host(&nv), &want_v, 1e-5, 1e-6);
    // count < 2 has no unbiased variance.
    let e = batchnorm_update_running(&cpu(&[c], &rm), &cpu(&[c], &rv), &m, &is, 1, 0.1, eps);
    assert!(matches!(e, Err(Error::Invalid(_))), "{e:?}");
    // GPU against CPU.
    let Some(dev) = test_device() else { return };
    let up = |t: &[f32]| Tensor::from_vec(&dev, &[c], t.to_vec()).unwrap();
    let (gm, gv) =
        batchnorm_update_running(&up(&rm), &up(&rv), &up(&host(&m)), &up(&host(&is)), count, momentum, eps).unwrap();
    assert_close("gpu running mean", &host(&gm), &host(&nm), 1e-5, 1e-6);
    assert_close("gpu running var", &host(&gv), &host(&nv), 1e-5, 1e-6);
}

#[test]
fn eval_mode_matches_definition_and_gpu() {
    let mut rng = Rng::new(7);
    for shape in [&[3, 5, 7, 7][..], &[200, 7], &[2, 4, 1, 1], &[8, 3, 16, 16]] {
        let eps = 1e-3f32;
        let d = Data::new(&mut rng, shape, 0.7);
        let c = d.c;
        let rm = rng.vec(c);
        let rv: Vec<f32> = rng.vec(c).iter().map(|v| 1.0 + 0.5 * v).collect();
        let args = |dev: &Device| {
            let t = |s: &[usize], v: &[f32]| Tensor::from_vec(dev, s, v.to_vec()).unwrap();
            (t(shape, &d.x), t(&[c], &d.gamma), t(&[c], &d.beta), t(&[c], &rm), t(&[c], &rv), t(shape, &d.gy))
        };
        let (x, g, b, m, v, gy) = args(&Device::Reference);
        let y = host(&batchnorm_eval(&x, &g, &b, &m, &v, eps).unwrap());
        let (gx, gg, gb) = batchnorm_eval_backward(&gy, &x, &g, &m, &v, eps).unwrap();
        let (mut wy, mut wgx) = (vec![0.0f32; d.x.len()], vec![0.0f32; d.x.len()]);
        let (mut wgg, mut wgb) = (vec![0.0f32; c], vec![0.0f32; c]);
        for ch in 0..c {
            let s = 1.0 / (rv[ch] as f64 + eps as f64).sqrt();
            for i in idx(shape, ch) {
                let xh = (d.x[i] as f64 - rm[ch] as f64) * s;
                wy[i] = (d.gamma[ch] as f64 * xh + d.beta[ch] as f64) as f32;
                wgx[i] = (d.gy[i] as f64 * d.gamma[ch] as f64 * s) as f32;
                wgg[ch] += (d.gy[i] as f64 * xh) as f32;
                wgb[ch] += d.gy[i];
            }
        }
        let what = format!("{shape:?}");
        assert_close(&format!("eval y {what}"), &y, &wy, 1e-6, 1e-6);
        assert_close(&format!("eval gx {what}"), &host(&gx), &wgx, 1e-6, 1e-6);
        assert_scaled(&format!("eval ggamma {what}"), &host(&gg), &wgg, 1e-5);
        assert_scaled(&format!("eval gbeta {what}"), &host(&gb), &wgb, 1e-5);
        // With the running statistics set to the batch statistics eval equals training mode.
        let (yt, bm, bis) = batchnorm_train(&x, &g, &b, eps).unwrap();
        let bvar: Vec<f32> = host(&bis).iter().map(|s| (1.0 / (*s as f64).powi(2) - eps as f64) as f32).collect();
        let ye = batchnorm_eval(&x, &g, &b, &bm, &cpu(&[c], &bvar), eps).unwrap();
        assert_close(&format!("eval = train {what}"), &host(&ye), &host(&yt), 1e-4, 1e-4);

        for dev in devices() {
            let what = format!("{} {what}", dev.name());
            let (x2, g2, b2, m2, v2, gy2) = args(&dev);
            let y2 = host(&batchnorm_eval(&x2, &g2, &b2, &m2, &v2, eps).unwrap());
            assert_close(&format!("eval y {what}"), &y2, &y, 1e-5, 1e-5);
            let (gx2, gg2, gb2) = batchnorm_eval_backward(&gy2, &x2, &g2, &m2, &v2, eps).unwrap();
            assert_close(&format!("eval gx {what}"), &host(&gx2), &host(&gx), 1e-5, 1e-5);
            assert_scaled(&format!("eval ggamma {what}"), &host(&gg2), &host(&gg), 1e-4);
            assert_scaled(&format!("eval gbeta {what}"), &host(&gb2), &host(&gb), 1e-4);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GPU kernels against the CPU reference.

/// Runs every training-mode op on `dev` and returns the host results in a fixed order.
fn run_all(dev: &Device, d: &Data, eps: f32) -> Vec<(&'static str, Vec<f32>)> {
    let t = |s: &[usize], v: &[f32]| Tensor::from_vec(dev, s, v.to_vec()).unwrap();
    let (sh, c) = (&d.shape[..], d.c);
    let (x, g, b, gy) = (t(sh, &d.x), t(&[c], &d.gamma), t(&[c], &d.beta), t(sh, &d.gy));
    let (y, m, is) = batchnorm_train(&x, &g, &b, eps).unwrap();
    let (gx, gg, gb) = batchnorm_backward(&gy, &x, &g, &m, &is).unwrap();
    let (jy, jdy) = batchnorm_jvp(&x, &t(sh, &d.dx), &g, &t(&[c], &d.dgamma), &b, &t(&[c], &d.dbeta), eps).unwrap();
    let (dgx, dgg, dgb) =
        batchnorm_backward_jvp(&gy, &t(sh, &d.dgy), &x, &t(sh, &d.dx), &g, &t(&[c], &d.dgamma), eps).unwrap();
    vec![
        ("y", host(&y)),
        ("mean", host(&m)),
        ("invstd", host(&is)),
        ("gx", host(&gx)),
        ("ggamma", host(&gg)),
        ("gbeta", host(&gb)),
        ("jvp y", host(&jy)),
        ("jvp dy", host(&jdy)),
        ("dgx", host(&dgx)),
        ("dggamma", host(&dgg)),
        ("dgbeta", host(&dgb)),
    ]
}

/// Every device (the split variant on the one taking the hardware variants: every shape
/// below but `[1, 5, 1, 1]` and `[5, 9]`: fewer than 512 channels, each longer than a
/// workgroup's 64 invocations).
#[test]
fn batchnorm_kernels_match_the_reference_on_every_device() {
    let mut rng = Rng::new(8);
    let cases: &[(&[usize], f32)] = &[
        (&[3, 5, 7, 7], 0.0),
        (&[200, 7], 0.0),
        (&[2, 64, 8, 8], 0.0),
        (&[4, 3, 32, 32], 10.0),
        (&[1, 5, 1, 1], 0.0),
        (&[5, 9], -3.0),
        (&[30, 4, 30, 30], 0.0),
    ];
    for &(shape, offset) in cases {
        let eps = 1e-5f32;
        let d = Data::new(&mut rng, shape, offset);
        let want = run_all(&Device::Reference, &d, eps);
        for dev in devices() {
            let got = run_all(&dev, &d, eps);
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                let what = format!("{} {name} {shape:?} offset {offset}", dev.name());
                if shape == [1, 5, 1, 1] && *name != "invstd" {
                    // One value per channel: y = beta exactly; the rest is cancellation noise.
                    assert_scaled(&what, g, w, 1e-3);
                } else {
                    assert_scaled(&what, g, w, 2e-4);
                }
            }
        }
    }
}

#[test]
fn each_adapter_class_takes_its_batchnorm_variant() {
    use geopath::ops::norm::{BnVariant, SplitPlan};
    use geopath::reference::norm::BnShape;
    // VGG's first BatchNorm at batch 128: 64 channels of 131,072 elements.
    let vgg = BnShape { n: 128, c: 64, hw: 1024 };
    let hardware = gpu_hardware_variants()
        .or_else(|| wgpu_device().filter(|d| d.gpu().is_some_and(|c| c.class == geopath::gpu::AdapterClass::Hardware)));
    if let Some(Device::Gpu(hw)) = hardware {
        // Eight workgroups per channel make the 512 wanted.
        assert_eq!(BnVariant::select(&hw, &vgg), BnVariant::Split(SplitPlan { splits: 8, chunk: 16_384 }));
        // Chunks of at least one element per invocation (64 here).
        assert_eq!(
            BnVariant::select(&hw, &BnShape { n: 3, c: 5, hw: 49 }),
            BnVariant::Split(SplitPlan { splits: 3, chunk: 64 })
        );
        // 512 channels fill the GPU alone; one element per channel cannot be split.
        assert_eq!(BnVariant::select(&hw, &BnShape { n: 128, c: 512, hw: 4 }), BnVariant::PerChannel);
        assert_eq!(BnVariant::select(&hw, &BnShape { n: 1, c: 5, hw: 1 }), BnVariant::PerChannel);
    }
    if let Some(Device::Gpu(sw)) = wgpu_device() {
        if sw.class == geopath::gpu::AdapterClass::Software {
            assert_eq!(BnVariant::select(&sw, &vgg), BnVariant::PerChannel);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout.

#[test]
fn dropout_mask_values_and_rate() {
    let n = 100_000;
    let x = vec![1.5f32; n];
    let xt = cpu(&[n], &x);
    for p in [0.0f32, 0.1, 0.5, 0.9] {
        let (y, mask) = dropout(&xt, p, 42).unwrap();
        let (y, mask) = (host(&y), host(&mask));
        let keep = 1.0 / (1.0 - p);
        assert!(mask.iter().all(|&m| m == 0.0 || m == keep), "p {p}: mask values outside {{0, {keep}}}");
        assert!(y.iter().zip(&mask).all(|(y, m)| *y == 1.5 * m), "p {p}: y != x * mask");
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let tol = 5.0 * (p as f64 * (1.0 - p as f64) / n as f64).sqrt() + 1e-9;
        assert!((dropped - p as f64).abs() <= tol, "p {p}: dropped fraction {dropped}");
        // Neighbouring elements are not correlated: pairs both dropped ~ p^2.
        let both = mask.windows(2).filter(|w| w[0] == 0.0 && w[1] == 0.0).count() as f64 / (n - 1) as f64;
        let p2 = (p * p) as f64;
        assert!(
            (both - p2).abs() <= 5.0 * (p2 * (1.0 - p2) / n as f64).sqrt() + 1e-9,
            "p {p}: adjacent pairs both dropped {both} vs {p2}"
        );
    }
}

#[test]
fn dropout_seeds_and_gpu_match_cpu() {
    let mut rng = Rng::new(9);
    let n = 100_000;
    let x = rng.vec(n);
    let xt = cpu(&[n], &x);
    let p = 0.3f32;
    let (_, m1) = dropout(&xt, p, 1).unwrap();
    let (_, m1b) = dropout(&xt, p, 1).unwrap();
    assert_eq!(host(&m1), host(&m1b), "same seed, same mask");
    // Different seeds (also differing only in the high 32 bits) give different, uncorrelated
    // masks: positions that differ ~ 2 p (1 - p).
    for seed in [2u64, 1 | (1 << 32), u64::MAX] {
        let (_, m2) = dropout(&xt, p, seed).unwrap();
        let differ = host(&m1).iter().zip(host(&m2)).filter(|(a, b)| **a != *b).count() as f64 / n as f64;
        let want = 2.0 * p as f64 * (1.0 - p as f64);
        assert!(
            (differ - want).abs() < 0.01,
            "seed {seed}: {differ} of the positions differ from seed 1, want about {want}"
        );
    }
    let Some(dev) = test_device() else { return };
    for (shape, seed, p) in [
        (vec![n], 1u64, 0.3f32),
        (vec![3, 5, 7, 7], 0xdead_beef_0123_4567, 0.5),
        (vec![200, 7], 7, 0.0),
        (vec![13], 3, 0.95),
    ] {
        let len = shape.iter().product();
        let xv = rng.vec(len);
        let (cy, cm) = dropout(&cpu(&shape, &xv), p, seed).unwrap();
        let (gy, gm) = dropout(&Tensor::from_vec(&dev, &shape, xv).unwrap(), p, seed).unwrap();
        assert_eq!(gm.shape(), &shape[..]);
        assert_eq!(host(&gm), host(&cm), "gpu mask {shape:?} seed {seed}");
        assert_eq!(host(&gy), host(&cy), "gpu y {shape:?} seed {seed}");
    }
}

#[test]
fn dropout_rejects_p_out_of_range() {
    let xt = cpu(&[4], &[1.0, 2.0, 3.0, 4.0]);
    for p in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        let e = dropout(&xt, p, 0);
        assert!(matches!(e, Err(Error::Invalid(_))), "p {p}: {e:?}");
    }
    if let Some(dev) = test_device() {
        let x = Tensor::from_vec(&dev, &[4], vec![1.0; 4]).unwrap();
        assert!(dropout(&x, 1.0, 0).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Shape errors.

fn assert_shape_err<T: std::fmt::Debug>(r: geopath::Result<T>, parts: &[&str]) {
    match r {
        Err(e @ Error::Shape { .. }) => {
            let msg = e.to_string();
            for p in parts {
                assert!(msg.contains(p), "error {msg:?} does not name {p}");
            }
        }
        other => panic!("expected a shape error naming {parts:?}, got {other:?}"),
    }
}

#[test]
fn batchnorm_shape_errors_name_both_shapes() {
    let x = cpu(&[2, 3, 4, 4], &[0.5; 96]);
    let c3 = cpu(&[3], &[1.0; 3]);
    let c4 = cpu(&[4], &[1.0; 4]);
    let wrong = cpu(&[2, 3, 4, 5], &[0.5; 120]);
    assert_shape_err(batchnorm_train(&x, &c4, &c3, 1e-5), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_train(&x, &c3, &c4, 1e-5), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_train(&cpu(&[2, 3, 4], &[0.0; 24]), &c3, &c3, 1e-5), &["[2, 3, 4]"]);
    assert_shape_err(batchnorm_backward(&wrong, &x, &c3, &c3, &c3), &["[2, 3, 4, 5]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_backward(&x, &x, &c3, &c4, &c3), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_jvp(&x, &wrong, &c3, &c3, &c3, &c3, 1e-5), &["[2, 3, 4, 5]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_jvp(&x, &x, &c3, &c4, &c3, &c3, 1e-5), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_backward_jvp(&x, &wrong, &x, &x, &c3, &c3, 1e-5), &["[2, 3, 4, 5]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_backward_jvp(&x, &x, &x, &x, &c3, &c4, 1e-5), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_eval(&x, &c3, &c3, &c4, &c3, 1e-5), &["[4]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_eval_backward(&wrong, &x, &c3, &c3, &c3, 1e-5), &["[2, 3, 4, 5]", "[2, 3, 4, 4]"]);
    assert_shape_err(batchnorm_update_running(&c3, &c4, &c3, &c3, 10, 0.1, 1e-5), &["[4]", "[3]"]);
    // Dense layers: x [N, C] with gamma [C].
    let xd = cpu(&[5, 3], &[0.1; 15]);
    assert_shape_err(batchnorm_train(&xd, &c4, &c3, 1e-5), &["[4]", "[5, 3]"]);
    assert!(batchnorm_train(&xd, &c3, &c3, 1e-5).is_ok());
}

/// Rough timings on the test adapter (run with `--ignored --nocapture`); not a correctness test.
#[test]
#[ignore]
fn bench_batchnorm_timings() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(10);
    for shape in [&[128usize, 64, 16, 16][..], &[200, 16, 32, 32], &[200, 512]] {
        let d = Data::new(&mut rng, shape, 0.0);
        let c = d.c;
        let t = |s: &[usize], v: &[f32]| Tensor::from_vec(&dev, s, v.to_vec()).unwrap();
        let (x, g, b, gy, dx, dgy) =
            (t(shape, &d.x), t(&[c], &d.gamma), t(&[c], &d.beta), t(shape, &d.gy), t(shape, &d.dx), t(shape, &d.dgy));
        let (_, m, is) = batchnorm_train(&x, &g, &b, 1e-5).unwrap();
        dev.sync().unwrap();
        let time = |name: &str, f: &dyn Fn()| {
            f();
            dev.sync().unwrap();
            let reps = 5;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            dev.sync().unwrap();
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            eprintln!("{shape:?} {name}: {ms:.2} ms");
        };
        time("train", &|| drop(batchnorm_train(&x, &g, &b, 1e-5).unwrap()));
        time("backward", &|| drop(batchnorm_backward(&gy, &x, &g, &m, &is).unwrap()));
        time("jvp", &|| drop(batchnorm_jvp(&x, &dx, &g, &g, &b, &b, 1e-5).unwrap()));
        time("backward_jvp", &|| drop(batchnorm_backward_jvp(&gy, &dgy, &x, &dx, &g, &g, 1e-5).unwrap()));
        time("dropout", &|| drop(dropout(&x, 0.5, 3).unwrap()));
    }
}
