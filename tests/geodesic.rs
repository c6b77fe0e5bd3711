//! Geodesic layer 1: metric products against explicit matrices built from Jacobians on a tiny
//! MLP (CPU device and GPU), the step solvers against dense trust-region solutions from a
//! Jacobi eigen-decomposition, the penalty step, and error cases.

mod common;
use common::*;
use geopath::autodiff::{self, Model};
use geopath::geodesic::{
    bhattacharyya, penalty_step, steihaug_cg, trust_region_multiplier, Metric, MetricKind, StepReport,
};
use geopath::nn::mlp::Mlp;
use geopath::{Device, Error, Result, Tensor};

/// The reference, then every device under test.
fn devices() -> Vec<Device> {
    std::iter::once(Device::Reference).chain(common::devices()).collect()
}

fn t(dev: &Device, v: &[f32]) -> Tensor {
    Tensor::from_vec(dev, &[v.len()], v.to_vec()).unwrap()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn norm64(a: &[f32]) -> f64 {
    dot64(a, a).sqrt()
}

// ---------------------------------------------------------------------------------------------
// A tiny MLP problem.

const B: usize = 3;
const K: usize = 3;

struct Net {
    mlp: Mlp,
    w: Vec<f32>,
    x: Vec<f32>,
    labels: Vec<u32>,
}

impl Net {
    fn new(seed: u64) -> Net {
        let mlp = Mlp::new(&[4, 3, K]);
        let mut rng = Rng::new(seed);
        let mut w = Vec::new();
        for s in mlp.param_shapes() {
            let scale = if s.len() == 1 { 0.2 } else { 1.0 };
            w.extend((0..s.iter().product::<usize>()).map(|_| scale * rng.uniform()));
        }
        let x = rng.vec(B * 4);
        let labels = (0..B).map(|_| rng.below(K) as u32).collect();
        Net { mlp, w, x, labels }
    }
    fn n(&self) -> usize {
        self.w.len()
    }
    fn x(&self, dev: &Device) -> Tensor {
        Tensor::from_vec(dev, &[B, 4], self.x.clone()).unwrap()
    }
    fn labels(&self, dev: &Device) -> Tensor {
        Tensor::from_u32(dev, &[B], &self.labels).unwrap()
    }
    fn metric(&self, dev: &Device, kind: MetricKind, damping: f32) -> Metric<'_, Mlp> {
        Metric::new(&self.mlp, t(dev, &self.w), self.x(dev), Some(self.labels(dev)), kind, damping).unwrap()
    }
    fn logits(&self, dev: &Device, w: &[f32]) -> Tensor {
        autodiff::forward(&self.mlp, &t(dev, w), &self.x(dev)).unwrap()
    }
    /// The Jacobian `[B*K, n]` (row-major), column by column with JVPs along basis vectors.
    fn jacobian(&self, dev: &Device) -> Vec<f64> {
        let n = self.n();
        let mut jac = vec![0f64; B * K * n];
        for col in 0..n {
            let mut e = vec![0f32; n];
            e[col] = 1.0;
            let (_, je) = autodiff::jvp(&self.mlp, &t(dev, &self.w), &t(dev, &e), &self.x(dev)).unwrap();
            for (r, v) in je.to_vec().unwrap().into_iter().enumerate() {
                jac[r * n + col] = v as f64;
            }
        }
        jac
    }
}

fn softmax_rows(z: &[f32]) -> Vec<f64> {
    z.chunks(K)
        .flat_map(|row| {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

/// `(1/B) Σ_b J_bᵀ A_b J_b` with `A_b` the `K x K` block `b` of `a` (`None`: identity).
fn dense_metric(jac: &[f64], n: usize, p: Option<&[f64]>) -> Vec<f64> {
    let mut g = vec![0f64; n * n];
    for b in 0..B {
        for i in 0..K {
            for j in 0..K {
                let a = match p {
                    None => (i == j) as u8 as f64,
                    Some(p) => (i == j) as u8 as f64 * p[b * K + i] - p[b * K + i] * p[b * K + j],
                };
                if a == 0.0 {
                    continue;
                }
                let (ri, rj) = ((b * K + i) * n, (b * K + j) * n);
                for c in 0..n {
                    for d in 0..n {
                        g[c * n + d] += a * jac[ri + c] * jac[rj + d] / B as f64;
                    }
                }
            }
        }
    }
    g
}

fn matvec(m: &[f64], v: &[f32]) -> Vec<f32> {
    let n = v.len();
    (0..n).map(|r| (0..n).map(|c| m[r * n + c] * v[c] as f64).sum::<f64>() as f32).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn metric_products_match_explicit_matrices() {
    let net = Net::new(1);
    let n = net.n();
    let mut rng = Rng::new(2);
    let v = rng.vec(n);
    let u = rng.vec(n);
    for dev in devices() {
        let jac = net.jacobian(&dev);
        let p = softmax_rows(&net.logits(&dev, &net.w).to_vec().unwrap());
        let gn = dense_metric(&jac, n, None);
        let fisher = dense_metric(&jac, n, Some(&p));

        // Logits and Fisher against (1/B) Σ J_bᵀ A_b J_b, plus damping.
        for (kind, dense) in [(MetricKind::Logits, &gn), (MetricKind::Fisher, &fisher)] {
            let want = matvec(dense, &v);
            let got = net.metric(&dev, kind, 0.0).apply(&t(&dev, &v)).unwrap().to_vec().unwrap();
            assert_close(&format!("{kind} on {dev:?}"), &got, &want, 1e-4, 1e-5 * max_abs(&want));
            let damped = net.metric(&dev, kind, 0.5).apply(&t(&dev, &v)).unwrap().to_vec().unwrap();
            let want_damped: Vec<f32> = want.iter().zip(&v).map(|(a, b)| a + 0.5 * b).collect();
            assert_close(&format!("damped {kind} on {dev:?}"), &damped, &want_damped, 1e-4, 1e-5);
            let q = net.metric(&dev, kind, 0.0).quadratic(&t(&dev, &v)).unwrap();
            let want_q = dot64(&v, &want);
            assert!((q as f64 - want_q).abs() <= 1e-4 * want_q.abs(), "{kind} quadratic {q} vs {want_q}");
        }
        // The Fisher is a non-trivial reweighting of the Gauss–Newton matrix.
        let gv = matvec(&gn, &v);
        let fv = matvec(&fisher, &v);
        assert!(gv.iter().zip(&fv).any(|(a, b)| (a - b).abs() > 0.1 * max_abs(&gv)), "fisher equals logits?");

        // Hessian: finite differences of the gradient along v, symmetry, and the last-layer
        // block, where the logits are linear in the parameters so that H = Fisher exactly.
        let h = net.metric(&dev, MetricKind::Hessian, 0.0);
        let hv = h.apply(&t(&dev, &v)).unwrap().to_vec().unwrap();
        let hu = h.apply(&t(&dev, &u)).unwrap().to_vec().unwrap();
        let fd_eps = 1e-3f32;
        let grad_at = |s: f32| {
            let w: Vec<f32> = net.w.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            autodiff::loss_grad(&net.mlp, &t(&dev, &w), &net.x(&dev), &net.labels(&dev)).unwrap().1.to_vec().unwrap()
        };
        let (gp, gm) = (grad_at(fd_eps), grad_at(-fd_eps));
        let fd: Vec<f32> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * fd_eps)).collect();
        assert_close(&format!("hessian vs finite differences on {dev:?}"), &hv, &fd, 2e-2, 2e-3 * max_abs(&fd));
        let (uhv, vhu) = (dot64(&u, &hv), dot64(&v, &hu));
        assert!((uhv - vhu).abs() <= 1e-4 * uhv.abs().max(1e-2), "hessian asymmetric: {uhv} vs {vhu}");
        let last = n - (3 * K + K); // W2 [3, K] and b2 [K] come last
        for col in last..n {
            let mut e = vec![0f32; n];
            e[col] = 1.0;
            let hcol = h.apply(&t(&dev, &e)).unwrap().to_vec().unwrap();
            let want: Vec<f32> = (last..n).map(|r| fisher[r * n + col] as f32).collect();
            assert_close(&format!("hessian last-layer column {col} on {dev:?}"), &hcol[last..], &want, 1e-4, 1e-5);
        }
    }
}

#[test]
fn fisher_is_the_second_order_form_of_the_bhattacharyya_distance() {
    // Σ_x BD(p(w + s v), p(w)) = (s² / 8) B vᵀ F v + O(s³).
    let net = Net::new(3);
    let dev = Device::Reference;
    let v = Rng::new(4).vec(net.n());
    let vfv = net.metric(&dev, MetricKind::Fisher, 0.0).quadratic(&t(&dev, &v)).unwrap() as f64;
    let z0 = net.logits(&dev, &net.w);
    let s = 1e-3f32;
    let w: Vec<f32> = net.w.iter().zip(&v).map(|(a, b)| a + s * b).collect();
    let (bd, _) = bhattacharyya(&net.logits(&dev, &w), &z0).unwrap();
    let want = (s as f64).powi(2) / 8.0 * B as f64 * vfv;
    assert!((bd - want).abs() <= 1e-2 * want, "BD {bd} vs s²/8 B vᵀFv = {want}");
}

#[test]
fn metric_kind_parses_and_displays() {
    for k in MetricKind::ALL {
        assert_eq!(k.to_string().parse::<MetricKind>().unwrap(), k);
    }
    assert_eq!("Fisher".parse::<MetricKind>().unwrap(), MetricKind::Fisher);
    assert!(matches!("euclid".parse::<MetricKind>(), Err(Error::Invalid(_))));
    assert!(MetricKind::Logits.is_psd() && MetricKind::Fisher.is_psd() && !MetricKind::Hessian.is_psd());
}

#[test]
fn metric_and_solver_argument_errors() {
    let net = Net::new(5);
    let dev = Device::Reference;
    let w = t(&dev, &net.w);
    let err = Metric::new(&net.mlp, w.clone(), net.x(&dev), None, MetricKind::Hessian, 0.0).err().unwrap();
    assert!(matches!(err, Error::Invalid(ref m) if m.contains("labels")), "{err}");
    assert!(Metric::new(&net.mlp, w.clone(), net.x(&dev), None, MetricKind::Fisher, 0.0).is_ok());
    let bad_labels = Tensor::from_u32(&dev, &[B + 1], &[0; B + 1]).unwrap();
    let err = Metric::new(&net.mlp, w.clone(), net.x(&dev), Some(bad_labels), MetricKind::Hessian, 0.0);
    assert!(matches!(err, Err(Error::Shape { .. })));
    let short = t(&dev, &net.w[1..]);
    assert!(matches!(
        Metric::new(&net.mlp, short.clone(), net.x(&dev), None, MetricKind::Logits, 0.0),
        Err(Error::Shape { .. })
    ));
    assert!(Metric::new(&net.mlp, w.clone(), net.x(&dev), None, MetricKind::Logits, -1.0).is_err());
    for kind in MetricKind::ALL {
        let m = net.metric(&dev, kind, 0.0);
        assert!(matches!(m.apply(&short), Err(Error::Shape { .. })), "{kind}");
    }

    let g = t(&dev, &[1.0, 2.0]);
    let id = |v: &Tensor| -> Result<Tensor> { Ok(v.clone()) };
    for eps in [0.0, -1.0, f32::NAN] {
        assert!(matches!(steihaug_cg(&id, &g, 1.0, eps, 10, 1e-6), Err(Error::Invalid(_))), "{eps}");
        assert!(matches!(trust_region_multiplier(&id, &g, 1.0, eps, 10, 1e-6, 20), Err(Error::Invalid(_))));
    }
    let wrong =
        |_: &Tensor| -> Result<Tensor> { Ok(Tensor::from_vec(&Device::Reference, &[3], vec![0.0; 3]).unwrap()) };
    assert!(matches!(steihaug_cg(&wrong, &g, 1.0, 1.0, 10, 1e-6), Err(Error::Shape { .. })));
    assert!(matches!(trust_region_multiplier(&wrong, &g, 1.0, 1.0, 10, 1e-6, 20), Err(Error::Shape { .. })));

    let z0 = net.logits(&dev, &net.w);
    let gl = t(&dev, &vec![0.0; net.n()]);
    assert!(matches!(penalty_step(&net.mlp, &w, &z0, &net.x(&dev), &gl, 0.1, 0.0), Err(Error::Invalid(_))));
    assert!(matches!(penalty_step(&net.mlp, &w, &z0, &net.x(&dev), &short, 0.1, 0.01), Err(Error::Shape { .. })));
    let z_bad = Tensor::from_vec(&dev, &[B, K + 1], vec![0.0; B * (K + 1)]).unwrap();
    assert!(matches!(penalty_step(&net.mlp, &w, &z_bad, &net.x(&dev), &gl, 0.1, 0.01), Err(Error::Shape { .. })));
}

// ---------------------------------------------------------------------------------------------
// Dense reference: Jacobi eigen-decomposition and the exact trust-region solution.

/// Eigenvalues and eigenvectors (columns of the row-major `V`) of a symmetric `n x n` matrix,
/// by cyclic Jacobi rotations.
fn jacobi_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let tt = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (tt * tt + 1.0).sqrt();
                let s = tt * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

struct Exact {
    theta: Vec<f64>,
    mu: f64,
    boundary: bool,
    lambda_min: f64,
}

/// The exact minimiser of `θᵀGθ + β⟨θ, g⟩` over `‖θ‖ ≤ ε`: `θ(μ) = −Σ_i β c_i / (2(λ_i + μ)) q_i`
/// with the secular equation `‖θ(μ)‖ = ε` solved by bisection (not the hard case).
fn exact_trust_region(gm: &[f64], g: &[f32], beta: f64, eps: f64) -> Exact {
    let n = g.len();
    let (lam, v) = jacobi_eigen(gm, n);
    // Reconstruction check of the eigen-solver itself.
    for i in 0..n {
        for j in 0..n {
            let r: f64 = (0..n).map(|k| v[i * n + k] * lam[k] * v[j * n + k]).sum();
            assert!((r - gm[i * n + j]).abs() < 1e-10, "Jacobi reconstruction ({i},{j}): {r} vs {}", gm[i * n + j]);
        }
    }
    let coef: Vec<f64> = (0..n).map(|k| beta * (0..n).map(|i| v[i * n + k] * g[i] as f64).sum::<f64>()).collect();
    let norm_at = |mu: f64| (0..n).map(|k| (coef[k] / (2.0 * (lam[k] + mu))).powi(2)).sum::<f64>().sqrt();
    let lambda_min = lam.iter().copied().fold(f64::INFINITY, f64::min);
    let theta_at = |mu: f64| -> Vec<f64> {
        (0..n).map(|i| -(0..n).map(|k| coef[k] / (2.0 * (lam[k] + mu)) * v[i * n + k]).sum::<f64>()).collect()
    };
    if lambda_min > 0.0 && norm_at(0.0) <= eps {
        return Exact { theta: theta_at(0.0), mu: 0.0, boundary: false, lambda_min };
    }
    let cnorm = coef.iter().map(|c| c * c).sum::<f64>().sqrt();
    let mut lo = (-lambda_min).max(0.0);
    let mut hi = lo + cnorm / (2.0 * eps) + 1e-12;
    for _ in 0..300 {
        let mid = 0.5 * (lo + hi);
        if norm_at(mid) > eps {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mu = 0.5 * (lo + hi);
    Exact { theta: theta_at(mu), mu, boundary: true, lambda_min }
}

/// Dense test problems: `(name, G, g)`.
fn problems() -> Vec<(String, Vec<f64>, Vec<f32>)> {
    let mut rng = Rng::new(7);
    let mut out = Vec::new();
    for n in [6usize, 9, 12] {
        let a: Vec<f64> = (0..n * n).map(|_| rng.uniform() as f64).collect();
        let g: Vec<f32> = rng.vec(n);
        // SPD: AᵀA / n + 0.05 I.
        let mut spd = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                spd[i * n + j] = (0..n).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>() / n as f64;
            }
            spd[i * n + i] += 0.05;
        }
        out.push((format!("spd{n}"), spd, g.clone()));
        // Indefinite: (A + Aᵀ) / 2.
        let sym: Vec<f64> = (0..n * n).map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n])).collect();
        out.push((format!("indefinite{n}"), sym.clone(), g.clone()));
        // PSD of rank 3, like a Gauss–Newton matrix with fewer outputs than parameters.
        let mut low = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                low[i * n + j] = (0..3).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>();
            }
        }
        out.push((format!("rank3-{n}"), low, g));
        // Indefinite with a small stationary point: θ(0) = −(β/2) G⁻¹ g lies inside the ball
        // while the solution is on its boundary (μ above −λ_min = 0.5).
        let (_, q) = jacobi_eigen(&sym, n);
        let lam: Vec<f64> = (0..n).map(|k| if k == 0 { -0.5 } else { 2.0 + k as f64 }).collect();
        let coef: Vec<f64> = (0..n).map(|k| if k == 0 { 0.05 } else { 0.3 * rng.uniform() as f64 }).collect();
        let saddle: Vec<f64> =
            (0..n * n).map(|ij| (0..n).map(|k| q[(ij / n) * n + k] * lam[k] * q[(ij % n) * n + k]).sum()).collect();
        let gs: Vec<f32> = (0..n).map(|i| (0..n).map(|k| q[i * n + k] * coef[k]).sum::<f64>() as f32).collect();
        out.push((format!("saddle{n}"), saddle, gs));
    }
    out
}

fn dense_op(gm: &[f64]) -> impl Fn(&Tensor) -> Result<Tensor> + '_ {
    move |v: &Tensor| {
        let h = v.to_vec()?;
        Tensor::from_vec(&v.device(), v.shape(), matvec(gm, &h))
    }
}

/// `q(θ) = θᵀGθ + β⟨θ, g⟩` in f64.
fn model(gm: &[f64], g: &[f32], beta: f64, theta: &[f64]) -> f64 {
    let n = g.len();
    let quad: f64 = (0..n).map(|i| theta[i] * (0..n).map(|j| gm[i * n + j] * theta[j]).sum::<f64>()).sum();
    quad + beta * (0..n).map(|i| theta[i] * g[i] as f64).sum::<f64>()
}

fn to64(r: &StepReport) -> Vec<f64> {
    r.theta.to_vec().unwrap().into_iter().map(|v| v as f64).collect()
}

fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

fn unconstrained_norm(gm: &[f64], g: &[f32], beta: f64) -> f64 {
    let ex = exact_trust_region(gm, g, beta, 1e30);
    ex.theta.iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn multiplier_form_matches_the_dense_solution_and_kkt() {
    let beta = 0.7f64;
    for (name, gm, g) in problems() {
        let n = g.len();
        let psd_pd = name.starts_with("spd");
        // Radii: active for every problem; interior too when G is PD.
        let mut radii = vec![0.3f64];
        if psd_pd {
            let un = unconstrained_norm(&gm, &g, beta);
            radii.push(0.5 * un);
            radii.push(2.0 * un);
        }
        for eps in radii {
            let ex = exact_trust_region(&gm, &g, beta, eps);
            let op = dense_op(&gm);
            let r = trust_region_multiplier(&op, &t(&Device::Reference, &g), beta as f32, eps as f32, 4 * n, 1e-6, 60)
                .unwrap_or_else(|e| panic!("{name} eps {eps}: {e}"));
            let th = to64(&r);
            let what = format!("{name} eps {eps} (lambda_min {:.3}, exact mu {:.5})", ex.lambda_min, ex.mu);
            assert_eq!(r.boundary, ex.boundary, "{what}: boundary");
            assert!(dist(&th, &ex.theta) <= 1e-3 * eps, "{what}: theta off by {}", dist(&th, &ex.theta));
            assert!((r.multiplier as f64 - ex.mu).abs() <= 1e-3 * ex.mu.max(0.1), "{what}: mu {}", r.multiplier);
            let nrm = th.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((r.norm as f64 - nrm).abs() <= 1e-5 * nrm.max(1e-6), "{what}: reported norm");
            assert!(nrm <= eps * (1.0 + 1e-6), "{what}: outside the ball ({nrm})");
            if ex.boundary {
                assert!((nrm - eps).abs() <= 1e-4 * eps, "{what}: |theta| = {nrm}");
            }
            // KKT: 2(G + μI)θ + βg = 0, μ ≥ 0, μ(‖θ‖ − ε) = 0.
            let mu = r.multiplier as f64;
            assert!(mu >= 0.0);
            let gnorm = beta * norm64(&g);
            let kkt: f64 = (0..n)
                .map(|i| {
                    let gt: f64 = (0..n).map(|j| gm[i * n + j] * th[j]).sum();
                    (2.0 * (gt + mu * th[i]) + beta * g[i] as f64).powi(2)
                })
                .sum::<f64>()
                .sqrt();
            assert!(kkt <= 2e-3 * gnorm, "{what}: KKT residual {kkt} vs |beta g| {gnorm}");
            assert!(mu * (eps - nrm).abs() <= 1e-4 * mu.max(1.0) * eps, "{what}: complementarity");
            let q = model(&gm, &g, beta, &th);
            let qx = model(&gm, &g, beta, &ex.theta);
            assert!(
                (r.model_value as f64 - q).abs() <= 1e-3 * q.abs().max(1e-3),
                "{what}: model {} vs {q}",
                r.model_value
            );
            assert!(q <= qx + 1e-4 * qx.abs().max(1e-3), "{what}: model {q} above the optimum {qx}");
        }
    }
}

#[test]
fn steihaug_stays_in_the_ball_and_decreases_the_model() {
    let beta = 0.7f64;
    for (name, gm, g) in problems() {
        let n = g.len();
        let op = dense_op(&gm);
        let c: Vec<f64> = g.iter().map(|&v| beta * v as f64).collect();
        let mut radii = vec![0.05f64, 0.3, 3.0];
        if name.starts_with("spd") {
            radii.push(2.0 * unconstrained_norm(&gm, &g, beta));
        }
        let mut interior_seen = false;
        for eps in radii {
            let ex = exact_trust_region(&gm, &g, beta, eps);
            let max_iter = 4 * n;
            let r = steihaug_cg(&op, &t(&Device::Reference, &g), beta as f32, eps as f32, max_iter, 1e-6).unwrap();
            let th = to64(&r);
            let what = format!("{name} eps {eps}");
            let nrm = th.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(nrm <= eps * (1.0 + 1e-5), "{what}: outside the ball ({nrm})");
            assert!((r.norm as f64 - nrm).abs() <= 1e-5 * nrm, "{what}: reported norm");
            assert!(r.iterations >= 1 && r.iterations <= max_iter, "{what}: {} iterations", r.iterations);
            if r.boundary {
                assert!((nrm - eps).abs() <= 1e-5 * eps, "{what}: boundary step of norm {nrm}");
            }
            let q = model(&gm, &g, beta, &th);
            assert!((r.model_value as f64 - q).abs() <= 1e-3 * q.abs(), "{what}: model {} vs {q}", r.model_value);
            assert!(q < 0.0, "{what}: no decrease ({q})");
            // Between the exact optimum and the Cauchy point.
            let qx = model(&gm, &g, beta, &ex.theta);
            assert!(q >= qx - 1e-5 * qx.abs(), "{what}: model {q} below the optimum {qx}?");
            let cnorm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
            let cbc = 2.0 * model(&gm, &g, 0.0, &c);
            let tau = if cbc <= 0.0 { 1.0 } else { (cnorm.powi(3) / (eps * cbc)).min(1.0) };
            let cauchy: Vec<f64> = c.iter().map(|v| -tau * eps / cnorm * v).collect();
            let qc = model(&gm, &g, beta, &cauchy);
            assert!(q <= qc + 1e-5 * qc.abs(), "{what}: model {q} worse than the Cauchy point's {qc}");
            if ex.lambda_min < 0.0 {
                assert!(r.boundary, "{what}: indefinite G must end on the boundary");
            }
            if name.starts_with("spd") && !ex.boundary {
                assert!(!r.boundary, "{what}: interior solution reported on the boundary");
                assert!(dist(&th, &ex.theta) <= 1e-3 * nrm, "{what}: interior theta off by {}", dist(&th, &ex.theta));
                assert_eq!(r.multiplier, 0.0);
                // CG, not steepest descent: converged in about n iterations.
                assert!(r.iterations <= n + 3, "{what}: {} iterations for n = {n}", r.iterations);
                interior_seen = true;
            }
        }
        assert_eq!(interior_seen, name.starts_with("spd"), "{name}: interior case");
    }
    // The first iterate is the Cauchy point: one iteration gives it exactly.
    let (_, gm, g) = &problems()[0];
    let r = steihaug_cg(&dense_op(gm), &t(&Device::Reference, g), 1.0, 10.0, 1, 0.0).unwrap();
    assert_eq!(r.iterations, 1);
    let gg = dot64(g, g);
    let ggg = dot64(g, &matvec(gm, g)) * 2.0;
    let want: Vec<f32> = g.iter().map(|v| (-(gg / ggg) * *v as f64) as f32).collect();
    assert_close("one-step Steihaug", &r.theta.to_vec().unwrap(), &want, 1e-5, 1e-7);
}

#[test]
fn solvers_give_zero_steps_for_a_zero_gradient() {
    let (_, gm, g) = &problems()[0];
    let op = dense_op(gm);
    let zero = t(&Device::Reference, &vec![0.0; g.len()]);
    for r in [
        steihaug_cg(&op, &zero, 1.0, 1.0, 10, 1e-6).unwrap(),
        trust_region_multiplier(&op, &zero, 1.0, 1.0, 10, 1e-6, 20).unwrap(),
        steihaug_cg(&op, &t(&Device::Reference, g), 0.0, 1.0, 10, 1e-6).unwrap(),
    ] {
        assert_eq!(r.norm, 0.0);
        assert!(!r.boundary);
        assert_eq!(r.theta.to_vec().unwrap(), vec![0.0; g.len()]);
    }
}

#[test]
fn solvers_on_the_gpu_match_the_cpu_device() {
    let Some(dev) = test_device() else { return };
    let (_, gm, g) = problems().into_iter().find(|p| p.0 == "rank3-9").unwrap();
    let op = dense_op(&gm);
    let run = |d: &Device| {
        let gt = t(d, &g);
        let a = trust_region_multiplier(&op, &gt, 0.7, 0.3, 40, 1e-6, 60).unwrap();
        let b = steihaug_cg(&op, &gt, 0.7, 0.3, 40, 1e-6).unwrap();
        assert!(a.theta.device().same(d) && b.theta.device().same(d));
        (a, b)
    };
    let (ca, cb) = run(&Device::Reference);
    let (ga, gb) = run(&dev);
    assert_close("multiplier theta gpu", &ga.theta.to_vec().unwrap(), &ca.theta.to_vec().unwrap(), 1e-3, 1e-5);
    assert!((ga.multiplier - ca.multiplier).abs() <= 1e-3 * ca.multiplier.max(0.1));
    assert_close("steihaug theta gpu", &gb.theta.to_vec().unwrap(), &cb.theta.to_vec().unwrap(), 1e-3, 1e-5);
    assert_eq!(ga.boundary, ca.boundary);
    assert_eq!(gb.boundary, cb.boundary);
}

#[test]
fn metric_solver_end_to_end_on_the_mlp() {
    // A real metric through the closure: the multiplier step satisfies KKT with G measured by
    // products (damping keeps the singular Gauss–Newton matrix well posed for CG).
    let net = Net::new(9);
    for dev in devices() {
        let m = net.metric(&dev, MetricKind::Fisher, 1e-3);
        let (_, grad) = autodiff::loss_grad(&net.mlp, &t(&dev, &net.w), &net.x(&dev), &net.labels(&dev)).unwrap();
        let op = |v: &Tensor| m.apply(v);
        let eps = 0.05f32;
        let r = trust_region_multiplier(&op, &grad, 1.0, eps, 60, 1e-5, 40).unwrap();
        assert!(r.boundary && (r.norm - eps).abs() <= 1e-4 * eps, "{dev:?}: norm {}", r.norm);
        let gt = m.apply(&r.theta).unwrap().to_vec().unwrap();
        let th = r.theta.to_vec().unwrap();
        let gh = grad.to_vec().unwrap();
        let res: Vec<f32> = (0..th.len()).map(|i| 2.0 * (gt[i] + r.multiplier * th[i]) + gh[i]).collect();
        assert!(norm64(&res) <= 1e-2 * norm64(&gh), "{dev:?}: KKT residual {} vs {}", norm64(&res), norm64(&gh));
        let s = steihaug_cg(&op, &grad, 1.0, eps, 60, 1e-5).unwrap();
        assert!(s.norm <= eps * (1.0 + 1e-5) && s.model_value <= 0.0 && s.model_value >= r.model_value - 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// Penalty step.

fn bd_host(z: &[f32], z0: &[f32]) -> f64 {
    let (p, q) = (softmax_rows(z), softmax_rows(z0));
    p.chunks(K).zip(q.chunks(K)).map(|(p, q)| -p.iter().zip(q).map(|(a, b)| (a * b).sqrt()).sum::<f64>().ln()).sum()
}

#[test]
fn bhattacharyya_value_and_logit_gradient() {
    let mut rng = Rng::new(10);
    let dev = Device::Reference;
    let z: Vec<f32> = rng.vec(B * K).into_iter().map(|v| 2.0 * v).collect();
    let z0: Vec<f32> = rng.vec(B * K).into_iter().map(|v| 2.0 * v).collect();
    let zt = |v: &[f32]| Tensor::from_vec(&dev, &[B, K], v.to_vec()).unwrap();
    let (val, grad) = bhattacharyya(&zt(&z), &zt(&z0)).unwrap();
    assert!((val - bd_host(&z, &z0)).abs() <= 1e-12, "{val} vs {}", bd_host(&z, &z0));
    let grad = grad.to_vec().unwrap();
    let h = 1e-3f32;
    for i in 0..B * K {
        let mut zp = z.clone();
        zp[i] += h;
        let mut zm = z.clone();
        zm[i] -= h;
        let step = (zp[i] - zm[i]) as f64;
        let fd = (bd_host(&zp, &z0) - bd_host(&zm, &z0)) / step;
        assert!((grad[i] as f64 - fd).abs() <= 1e-5, "logit {i}: {} vs {fd}", grad[i]);
    }
    let (same, g0) = bhattacharyya(&zt(&z), &zt(&z)).unwrap();
    assert!(same.abs() <= 1e-12);
    assert!(g0.to_vec().unwrap().iter().all(|&v| v == 0.0), "gradient at z = z0 not exactly zero");
}

#[test]
fn penalty_step_has_length_eta_and_follows_the_penalised_gradient() {
    let net = Net::new(11);
    let n = net.n();
    let mut rng = Rng::new(12);
    let w0 = net.w.clone();
    let w: Vec<f32> = w0.iter().map(|a| a + 0.3 * rng.uniform()).collect();
    let v = rng.vec(n);
    let eta = 0.01f32;
    for dev in devices() {
        let z0 = net.logits(&dev, &w0);
        let (_, gl) = autodiff::loss_grad(&net.mlp, &t(&dev, &w), &net.x(&dev), &net.labels(&dev)).unwrap();
        let step = |lambda: f32| penalty_step(&net.mlp, &t(&dev, &w), &z0, &net.x(&dev), &gl, lambda, eta).unwrap();
        // d = θ · model_value / η² (θ = −η d/‖d‖, model_value = −η‖d‖).
        let direction = |r: &StepReport| -> Vec<f64> {
            let k = r.model_value as f64 / (eta as f64).powi(2);
            r.theta.to_vec().unwrap().into_iter().map(|v| v as f64 * k).collect()
        };
        let r0 = step(0.0);
        let r1 = step(0.1);
        for r in [&r0, &r1] {
            let nrm = norm64(&r.theta.to_vec().unwrap());
            assert!((nrm - eta as f64).abs() <= 1e-5 * eta as f64, "{dev:?}: step length {nrm}");
            assert!(r.boundary && r.norm == eta);
        }
        // λ = 0: d is the BD gradient; check it along v by finite differences.
        let d0 = direction(&r0);
        let fd_eps = 1e-3f32;
        let bd_at = |s: f32| {
            let ws: Vec<f32> = w.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            bhattacharyya(&net.logits(&dev, &ws), &z0).unwrap().0
        };
        let fd = (bd_at(fd_eps) - bd_at(-fd_eps)) / (2.0 * fd_eps as f64);
        let dv: f64 = d0.iter().zip(&v).map(|(a, b)| a * *b as f64).sum();
        assert!((dv - fd).abs() <= 1e-2 * fd.abs().max(1e-3), "{dev:?}: <d, v> = {dv}, finite difference {fd}");
        // λ = 0.1: d moves by exactly λ ∇L.
        let d1 = direction(&r1);
        let glh = gl.to_vec().unwrap();
        let diff: Vec<f32> = d1.iter().zip(&d0).map(|(a, b)| ((a - b) / 0.1) as f32).collect();
        assert_close(&format!("penalty lambda term on {dev:?}"), &diff, &glh, 1e-3, 1e-4 * max_abs(&glh));
    }
}

#[test]
fn penalty_step_at_the_start_follows_the_task_gradient() {
    let net = Net::new(13);
    let eta = 0.01f32;
    for dev in devices() {
        let wt = t(&dev, &net.w);
        let z0 = net.logits(&dev, &net.w);
        let (_, gl) = autodiff::loss_grad(&net.mlp, &wt, &net.x(&dev), &net.labels(&dev)).unwrap();
        // λ = 0 at w = w₀: the BD gradient is exactly zero, so is the step.
        let r = penalty_step(&net.mlp, &wt, &z0, &net.x(&dev), &gl, 0.0, eta).unwrap();
        assert_eq!(r.norm, 0.0);
        assert!(r.theta.to_vec().unwrap().iter().all(|&v| v == 0.0), "{dev:?}: non-zero step");
        // λ > 0: the step is −η ∇L / ‖∇L‖.
        let r = penalty_step(&net.mlp, &wt, &z0, &net.x(&dev), &gl, 0.1, eta).unwrap();
        let glh = gl.to_vec().unwrap();
        let gn = norm64(&glh);
        let want: Vec<f32> = glh.iter().map(|v| (-(eta as f64) * *v as f64 / gn) as f32).collect();
        assert_close(&format!("task-gradient step on {dev:?}"), &r.theta.to_vec().unwrap(), &want, 1e-5, 1e-8);
        assert!((r.model_value as f64 + eta as f64 * 0.1 * gn).abs() <= 1e-5 * eta as f64 * 0.1 * gn);
    }
}

/// Steihaug–Toint CG reads scalars back to the host twice per iteration on a GPU (the dots
/// needed at the same point in one wait; before, five), whatever the number of iterations.
#[test]
fn cg_iterations_wait_on_the_gpu_at_most_twice_each() {
    if wgpu_device().is_none() {
        return;
    }
    // A context of its own: tests on other threads read back on the shared one.
    let ctx = geopath::gpu::GpuContext::new().unwrap();
    let dev = Device::Gpu(ctx.clone());
    let n = 1000;
    // A diagonal G with many distinct eigenvalues: CG runs its full iteration count.
    let diag = t(&dev, &(0..n).map(|i| 1.0 + i as f32 / 7.0).collect::<Vec<_>>());
    let g = t(&dev, &(0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect::<Vec<_>>());
    let op = |v: &Tensor| geopath::ops::elementwise::mul(&diag, v);
    for iterations in [3, 8] {
        let before = ctx.readbacks();
        let r = steihaug_cg(&op, &g, 1.0, 1e6, iterations, 1e-12).unwrap();
        let waits = ctx.readbacks() - before;
        assert_eq!(r.iterations, iterations);
        // ‖βg‖² first, two per iteration, the final scalars once.
        assert!(waits <= 2 * iterations as u64 + 2, "steihaug_cg: {waits} waits for {iterations} iterations");
    }
}

/// `v ↦ G v` for a dense `G` as a product on `dev` (no readback: usable inside the gated
/// iterations of the device-resident CG).
fn dense_op_on(dev: &Device, gm: &[f64]) -> impl Fn(&Tensor) -> Result<Tensor> {
    let n = (gm.len() as f64).sqrt() as usize;
    let g = Tensor::from_vec(dev, &[n, n], gm.iter().map(|&v| v as f32).collect()).unwrap();
    move |v: &Tensor| geopath::ops::matmul::matmul(&g, &v.reshape(&[n, 1])?)?.reshape(&[n])
}

/// Steihaug–Toint with its scalars on the device (the hardware variant) gives the host
/// solver's steps and iteration counts, waits twice per solve whatever the iterations, and
/// counts only the iterations that ran (the gated ones after the end take their count back).
/// With a product that reads back inside the iteration (a region split over submissions), the
/// steps are the same.
#[test]
fn device_cg_matches_the_host_solver_and_waits_twice_per_solve() {
    use geopath::geodesic::CgScalars;
    use geopath::gpu::{AdapterClass, ContextOptions, GpuContext};
    if !matches!(test_device(), Some(Device::Gpu(_))) {
        return;
    }
    // A context of its own (its readbacks are this test's alone), with the hardware variants.
    let options = ContextOptions { subgroups: true, class: Some(AdapterClass::Hardware) };
    let ctx = GpuContext::with_options(options).unwrap();
    let dev = Device::Gpu(ctx.clone());
    assert_eq!(CgScalars::select(&dev), CgScalars::Device);
    assert_eq!(CgScalars::select(&Device::Cpu), CgScalars::Host);
    let beta = 0.7f32;
    for (name, gm, g) in problems() {
        let n = g.len();
        let mut radii = vec![0.05f32, 0.3, 3.0];
        if name.starts_with("spd") {
            radii.push(2.0 * unconstrained_norm(&gm, &g, beta as f64) as f32);
        }
        for eps in radii {
            let what = format!("{name} eps {eps}");
            let max_iter = 4 * n;
            let host = steihaug_cg(&dense_op(&gm), &t(&Device::Reference, &g), beta, eps, max_iter, 1e-4).unwrap();
            let op = dense_op_on(&dev, &gm);
            let gd = t(&dev, &g);
            ctx.sync().unwrap();
            let waits = ctx.readbacks();
            let meter = geopath::cost::Meter::start();
            let r = steihaug_cg(&op, &gd, beta, eps, max_iter, 1e-4).unwrap();
            let flops = meter.flops();
            assert_eq!(ctx.readbacks() - waits, 2, "{what}: waits per solve");
            // The same iterations, but where the residual test passes within rounding (f32
            // scalars and products here, f64 on the host): one more or less.
            assert_eq!(r.boundary, host.boundary, "{what}");
            assert!(r.iterations.abs_diff(host.iterations) <= 1, "{what}: {} vs {}", r.iterations, host.iterations);
            let th = r.theta.to_vec().unwrap();
            assert_close(&what, &th, &host.theta.to_vec().unwrap(), 1e-3, 1e-4 * eps);
            assert!((r.norm - host.norm).abs() <= 1e-3 * host.norm, "{what}: norm {} vs {}", r.norm, host.norm);
            assert!((r.model_value - host.model_value).abs() <= 1e-3 * host.model_value.abs(), "{what}: model");
            // Recording exactly the iterations that run counts the same work.
            let meter = geopath::cost::Meter::start();
            let exact = steihaug_cg(&op, &gd, beta, eps, r.iterations, 1e-4).unwrap();
            assert_eq!(exact.iterations, r.iterations, "{what}");
            assert_eq!(meter.flops(), flops, "{what}: counted work with {max_iter} recorded iterations");
            // The host product reads back inside each gated iteration: the regions continue
            // after each wait behind the latched flag.
            let split = steihaug_cg(&dense_op(&gm), &gd, beta, eps, max_iter, 1e-4).unwrap();
            assert_eq!(split.boundary, r.boundary, "{what}: split regions");
            assert!(split.iterations.abs_diff(r.iterations) <= 1, "{what}: split regions");
            assert_close(&format!("{what} split"), &split.theta.to_vec().unwrap(), &th, 1e-3, 1e-4 * eps);
        }
    }
}

/// A gated region runs whole when its flag is set as it starts, also when the region clears
/// the flag and then waits for the GPU inside (the part after the wait reads the latched
/// flag), and not at all once the flag is clear; other threads' ops are not gated.
#[test]
fn gated_regions_latch_their_flag_across_waits_inside() {
    use geopath::kernels::{CG_ACTIVE, CG_EPS2, CG_ITERATIONS, CG_STATE_LEN, CG_STEP};
    use geopath::ops::cg;
    let Some(dev @ Device::Gpu(_)) = test_device() else { return };
    let mut init = vec![0.0f32; CG_STATE_LEN as usize];
    init[CG_ACTIVE as usize] = 1.0;
    init[CG_EPS2 as usize] = 4.0;
    init[CG_STEP as usize] = 0.5;
    let state = Tensor::from_vec(&dev, &[CG_STATE_LEN as usize], init).unwrap();
    let y = Tensor::zeros(&dev, &[4]).unwrap();
    let x = Tensor::full(&dev, &[4], 1.0).unwrap();
    let scalar = |v: f32| t(&dev, &[v]);
    let (dgd, dd, zd) = (scalar(-1.0), scalar(1.0), scalar(0.0));
    let region = || {
        cg::axpy_state(&y, 1.0, &state, CG_STEP, &x)?;
        // Non-positive curvature: the step becomes τ = 2 (‖τ d‖ = ε = 2) and the flag clears.
        cg::steihaug_alpha(&state, &dgd, &dd, &zd)?;
        y.to_vec()?;
        cg::axpy_state(&y, 1.0, &state, CG_STEP, &x)
    };
    cg::while_active(&state, region).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![2.5; 4], "the open region after its wait");
    cg::while_active(&state, region).unwrap();
    assert_eq!(y.to_vec().unwrap(), vec![2.5; 4], "a closed region");
    let s = state.to_vec().unwrap();
    assert_eq!((s[CG_ACTIVE as usize], s[CG_ITERATIONS as usize], s[CG_STEP as usize]), (0.0, 1.0, 2.0));
    // Another thread's ops on the same context, recorded while this thread's closed region is
    // open, run as usual.
    let other = std::thread::scope(|scope| {
        cg::while_active(&state, || {
            let join = scope.spawn(|| geopath::ops::elementwise::scale(3.0, &x).unwrap().to_vec().unwrap());
            Ok(join.join().unwrap())
        })
        .unwrap()
    });
    assert_eq!(other, vec![3.0; 4], "another thread's op inside a closed region");
    // A region that fails is closed all the same: the next one opens.
    let failed: geopath::Result<()> = cg::while_active(&state, || Err(Error::Invalid("inside".into())));
    assert!(matches!(failed, Err(Error::Invalid(_))));
    cg::while_active(&state, || Ok(())).unwrap();
}

/// The multiplier form with its CG scalars on the device (the hardware variant) finds the
/// dense solution as the host solver does, waiting once per CG solve (plus `‖b‖` before and
/// the report's dots after): an interior step, one solve, waits three times.
#[test]
fn device_multiplier_form_matches_the_dense_solution_waiting_once_per_solve() {
    use geopath::gpu::{AdapterClass, ContextOptions, GpuContext};
    if !matches!(test_device(), Some(Device::Gpu(_))) {
        return;
    }
    let options = ContextOptions { subgroups: true, class: Some(AdapterClass::Hardware) };
    let ctx = GpuContext::with_options(options).unwrap();
    let dev = Device::Gpu(ctx.clone());
    let beta = 0.7f64;
    for (name, gm, g) in problems() {
        let n = g.len();
        let mut radii = vec![(0.3f64, false)];
        if name.starts_with("spd") {
            let un = unconstrained_norm(&gm, &g, beta);
            radii.push((0.5 * un, false));
            radii.push((2.0 * un, true));
        }
        let op = dense_op_on(&dev, &gm);
        for (eps, interior) in radii {
            let what = format!("{name} eps {eps}");
            let ex = exact_trust_region(&gm, &g, beta, eps);
            let gd = t(&dev, &g);
            ctx.sync().unwrap();
            let waits = ctx.readbacks();
            let r = trust_region_multiplier(&op, &gd, beta as f32, eps as f32, 4 * n, 1e-6, 60)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let waits = ctx.readbacks() - waits;
            if interior {
                assert_eq!(waits, 3, "{what}: waits of a one-solve step");
            }
            assert!(waits < r.iterations as u64 + 3, "{what}: {waits} waits for {} CG iterations", r.iterations);
            let th = to64(&r);
            assert_eq!(r.boundary, ex.boundary, "{what}: boundary");
            assert!(dist(&th, &ex.theta) <= 1e-3 * eps, "{what}: theta off by {}", dist(&th, &ex.theta));
            assert!((r.multiplier as f64 - ex.mu).abs() <= 1e-3 * ex.mu.max(0.1), "{what}: mu {}", r.multiplier);
            let host = trust_region_multiplier(
                &dense_op(&gm),
                &t(&Device::Reference, &g),
                beta as f32,
                eps as f32,
                4 * n,
                1e-6,
                60,
            )
            .unwrap();
            assert!((r.model_value - host.model_value).abs() <= 1e-3 * host.model_value.abs(), "{what}: model");
        }
    }
}
