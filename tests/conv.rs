//! 2-D convolutions: the CPU reference against finite differences, every GPU kernel against the
//! CPU reference, and shape errors.

mod common;
use common::*;
use geopath::cost::Meter;
use geopath::ops::conv::{
    conv2d, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_params, conv2d_backward_weight, conv2d_jvp,
    Conv2dGeometry,
};
use geopath::{Device, Tensor};

/// One test geometry: x [n, c, h, w], weights [o, c, kh, kw], stride, pad.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Case {
    const fn new(
        n: usize,
        c: usize,
        hw: (usize, usize),
        o: usize,
        k: (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Case {
        Case { n, c, h: hw.0, w: hw.1, o, kh: k.0, kw: k.1, stride, pad }
    }
    fn x(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
    fn wt(&self) -> [usize; 4] {
        [self.o, self.c, self.kh, self.kw]
    }
    fn y(&self) -> [usize; 4] {
        let oh = (self.h + 2 * self.pad - self.kh) / self.stride + 1;
        let ow = (self.w + 2 * self.pad - self.kw) / self.stride + 1;
        [self.n, self.o, oh, ow]
    }
    fn g(&self) -> Conv2dGeometry {
        Conv2dGeometry { stride: self.stride, pad: self.pad }
    }
}

/// Geometries of the GPU tests: odd sizes, the 3x3 fast path, strides, 1x1, non-square.
const CASES: &[Case] = &[
    Case::new(2, 3, (7, 7), 5, (3, 3), 1, 1),   // fast 3x3 path, odd everything
    Case::new(2, 3, (7, 7), 5, (5, 5), 2, 2),   // 5x5 stride 2 pad 2
    Case::new(2, 3, (7, 7), 5, (1, 1), 1, 0),   // 1x1
    Case::new(2, 3, (7, 7), 5, (3, 3), 2, 0),   // 3x3 stride 2 no pad
    Case::new(1, 64, (8, 8), 64, (3, 3), 1, 1), // VGG-like
    Case::new(3, 2, (5, 11), 9, (3, 3), 1, 1),  // fast path, wide rows, O not a multiple of 8
    // CPU backend: groups of several images per product (few pixels), a partial last group.
    Case::new(9, 3, (5, 5), 5, (3, 3), 1, 1),
    Case::new(9, 4, (6, 6), 3, (3, 3), 2, 1),
    Case::new(8, 3, (4, 4), 5, (1, 1), 1, 0),
    Case::new(2, 4, (9, 6), 6, (2, 3), 1, 0),   // non-square kernel
    Case::new(1, 3, (10, 13), 7, (4, 4), 3, 1), // stride 3
    Case::new(2, 1, (1, 1), 3, (3, 3), 1, 1),   // 1x1 image through the fast path
    // CPU backend: "same" convolutions as shifted plane copies (2 wrapped columns for 5x5).
    Case::new(6, 2, (2, 2), 4, (3, 3), 1, 1),
    Case::new(2, 2, (6, 9), 3, (5, 5), 1, 2),
    Case::new(2, 2, (3, 7), 3, (5, 3), 1, 1), // pad below kh but not "same": offset tables
];

/// The same random data on the GPU device and on the CPU reference.
fn pair(dev: &Device, rng: &mut Rng, shape: &[usize]) -> (Tensor, Tensor) {
    let v = rng.vec(shape.iter().product());
    (Tensor::from_vec(dev, shape, v.clone()).unwrap(), Tensor::from_vec(&Device::Reference, shape, v).unwrap())
}

fn cpu_rand(rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::from_vec(&Device::Reference, shape, rng.vec(shape.iter().product())).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// `a + eps * v` on the CPU.
fn shifted(a: &Tensor, eps: f32, v: &Tensor) -> Tensor {
    let d: Vec<f32> = a.to_vec().unwrap().iter().zip(v.to_vec().unwrap()).map(|(x, y)| x + eps * y).collect();
    Tensor::from_vec(&Device::Reference, a.shape(), d).unwrap()
}

fn assert_near(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

#[test]
fn cpu_conv_backward_rules_and_jvp_match_finite_differences() {
    let mut rng = Rng::new(11);
    let eps = 1e-2f32;
    for case in CASES.iter().filter(|c| c.c * c.o < 1000) {
        let g = case.g();
        let x = cpu_rand(&mut rng, &case.x());
        let w = cpu_rand(&mut rng, &case.wt());
        let b = cpu_rand(&mut rng, &[case.o]);
        let gy = cpu_rand(&mut rng, &case.y());
        let (vx, vw, vb) =
            (cpu_rand(&mut rng, &case.x()), cpu_rand(&mut rng, &case.wt()), cpu_rand(&mut rng, &[case.o]));
        let f = |x: &Tensor, w: &Tensor, b: &Tensor| conv2d(x, w, Some(b), g, false).unwrap();
        let fd = |plus: Tensor, minus: Tensor| (dot(&gy, &plus) - dot(&gy, &minus)) / (2.0 * eps as f64);
        let what = format!("{case:?}");
        // Input: <gy, d conv / dx [v]> = <conv2d_backward_data(gy), v>.
        let want = fd(f(&shifted(&x, eps, &vx), &w, &b), f(&shifted(&x, -eps, &vx), &w, &b));
        let gx = conv2d_backward_data(&gy, &w, &case.x(), g).unwrap();
        assert_near(&format!("backward_data {what}"), dot(&gx, &vx), want, 1e-3);
        // Weights.
        let want = fd(f(&x, &shifted(&w, eps, &vw), &b), f(&x, &shifted(&w, -eps, &vw), &b));
        let gw = conv2d_backward_weight(&x, &gy, &case.wt(), g).unwrap();
        assert_near(&format!("backward_weight {what}"), dot(&gw, &vw), want, 1e-3);
        // Bias.
        let want = fd(f(&x, &w, &shifted(&b, eps, &vb)), f(&x, &w, &shifted(&b, -eps, &vb)));
        let gb = conv2d_backward_bias(&gy).unwrap();
        assert_near(&format!("backward_bias {what}"), dot(&gb, &vb), want, 1e-3);
        // Forward mode: central differences are exact for the bilinear conv (up to rounding).
        let plus = f(&shifted(&x, eps, &vx), &shifted(&w, eps, &vw), &shifted(&b, eps, &vb)).to_vec().unwrap();
        let minus = f(&shifted(&x, -eps, &vx), &shifted(&w, -eps, &vw), &shifted(&b, -eps, &vb)).to_vec().unwrap();
        let want: Vec<f32> = plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
        let (y, dy) = conv2d_jvp(&x, Some(&vx), &w, &vw, Some((&b, &vb)), g, false).unwrap();
        assert_close(&format!("jvp {what}"), &dy.to_vec().unwrap(), &want, 1e-3, 1e-3);
        assert_close(&format!("jvp primal {what}"), &y.to_vec().unwrap(), &f(&x, &w, &b).to_vec().unwrap(), 0.0, 0.0);
        // With ReLU: away from the kink the tangent follows the finite difference of act(conv).
        let eps_r = 1e-3f32;
        let fr = |s: f32| {
            conv2d(&shifted(&x, s, &vx), &shifted(&w, s, &vw), Some(&shifted(&b, s, &vb)), g, true)
                .unwrap()
                .to_vec()
                .unwrap()
        };
        let (plus, minus) = (fr(eps_r), fr(-eps_r));
        let pre = f(&x, &w, &b).to_vec().unwrap();
        let (yr, dyr) = conv2d_jvp(&x, Some(&vx), &w, &vw, Some((&b, &vb)), g, true).unwrap();
        let (yr, dyr) = (yr.to_vec().unwrap(), dyr.to_vec().unwrap());
        for i in 0..pre.len() {
            assert_eq!(yr[i], pre[i].max(0.0), "relu jvp primal {what} at {i}");
            if pre[i].abs() > 0.05 {
                let fdv = (plus[i] - minus[i]) / (2.0 * eps_r);
                assert!(
                    (dyr[i] - fdv).abs() <= 2e-2 * (1.0 + fdv.abs()),
                    "relu jvp {what} at {i}: {} vs {fdv}",
                    dyr[i]
                );
            }
        }
    }
}

/// Tolerance of a reduction of length `len`: rel 1e-4, abs 1e-4 sqrt(len).
fn check(what: &str, got: &Tensor, want: &Tensor, len: usize) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_close(what, &got.to_vec().unwrap(), &want.to_vec().unwrap(), 1e-4, 1e-4 * (len.max(1) as f32).sqrt());
}

#[test]
fn conv2d_forward_matches_cpu_reference() {
    for dev in test_devices() {
        let mut rng = Rng::new(21);
        for case in CASES {
            let (x, xc) = pair(&dev, &mut rng, &case.x());
            let (w, wc) = pair(&dev, &mut rng, &case.wt());
            let (b, bc) = pair(&dev, &mut rng, &[case.o]);
            let len = case.c * case.kh * case.kw;
            for (bias, relu) in [(false, false), (true, false), (true, true), (false, true)] {
                let got = conv2d(&x, &w, bias.then_some(&b), case.g(), relu).unwrap();
                let want = conv2d(&xc, &wc, bias.then_some(&bc), case.g(), relu).unwrap();
                assert_eq!(got.shape(), case.y());
                check(&format!("conv2d {case:?} bias={bias} relu={relu}"), &got, &want, len);
            }
        }
    }
}

#[test]
fn conv2d_jvp_matches_cpu_reference() {
    for dev in test_devices() {
        let mut rng = Rng::new(22);
        for case in CASES {
            let (x, xc) = pair(&dev, &mut rng, &case.x());
            let (dx, dxc) = pair(&dev, &mut rng, &case.x());
            let (w, wc) = pair(&dev, &mut rng, &case.wt());
            let (dw, dwc) = pair(&dev, &mut rng, &case.wt());
            let (b, bc) = pair(&dev, &mut rng, &[case.o]);
            let (db, dbc) = pair(&dev, &mut rng, &[case.o]);
            let len = 2 * case.c * case.kh * case.kw;
            for (has_dx, bias, relu) in
                [(true, true, true), (false, true, false), (true, false, false), (false, false, true)]
            {
                let (y, dy) =
                    conv2d_jvp(&x, has_dx.then_some(&dx), &w, &dw, bias.then_some((&b, &db)), case.g(), relu).unwrap();
                let (yc, dyc) =
                    conv2d_jvp(&xc, has_dx.then_some(&dxc), &wc, &dwc, bias.then_some((&bc, &dbc)), case.g(), relu)
                        .unwrap();
                let what = format!("conv2d_jvp {case:?} dx={has_dx} bias={bias} relu={relu}");
                check(&what, &y, &yc, len);
                check(&what, &dy, &dyc, len);
            }
        }
    }
}

#[test]
fn conv2d_backward_matches_cpu_reference() {
    for dev in test_devices() {
        let mut rng = Rng::new(23);
        // The extra cases have few channels and many rows, so the weight and bias gradients take
        // the split-reduction path.
        // The last has more than one 64-row block of output channels (the fused bias sums).
        let extra = [
            Case::new(8, 3, (16, 16), 3, (3, 3), 1, 1),
            Case::new(5, 2, (9, 9), 1, (2, 2), 2, 1),
            Case::new(2, 8, (6, 6), 70, (3, 3), 1, 1),
        ];
        for case in CASES.iter().chain(&extra) {
            let (x, xc) = pair(&dev, &mut rng, &case.x());
            let (w, wc) = pair(&dev, &mut rng, &case.wt());
            let (gy, gyc) = pair(&dev, &mut rng, &case.y());
            let [_, _, oh, ow] = case.y();
            let what = format!("{case:?}");
            let got = conv2d_backward_data(&gy, &w, &case.x(), case.g()).unwrap();
            let want = conv2d_backward_data(&gyc, &wc, &case.x(), case.g()).unwrap();
            check(&format!("backward_data {what}"), &got, &want, case.o * case.kh * case.kw);
            let got = conv2d_backward_weight(&x, &gy, &case.wt(), case.g()).unwrap();
            let want = conv2d_backward_weight(&xc, &gyc, &case.wt(), case.g()).unwrap();
            check(&format!("backward_weight {what}"), &got, &want, case.n * oh * ow);
            let got = conv2d_backward_bias(&gy).unwrap();
            let want_bias = conv2d_backward_bias(&gyc).unwrap();
            check(&format!("backward_bias {what}"), &got, &want_bias, case.n * oh * ow);
            // Both gradients in one call (fused on the hardware variants), counted as the two.
            let separate = Meter::start();
            conv2d_backward_weight(&x, &gy, &case.wt(), case.g()).unwrap();
            conv2d_backward_bias(&gy).unwrap();
            let separate = separate.flops();
            let fused = Meter::start();
            let (gw, gb) = conv2d_backward_params(&x, &gy, &case.wt(), case.g(), true).unwrap();
            assert_eq!(fused.flops(), separate, "{what}: counted FLOPs");
            check(&format!("backward_params weight {what}"), &gw, &want, case.n * oh * ow);
            check(&format!("backward_params bias {what}"), &gb.unwrap(), &want_bias, case.n * oh * ow);
            let (gw, gb) = conv2d_backward_params(&x, &gy, &case.wt(), case.g(), false).unwrap();
            assert!(gb.is_none(), "{what}: a bias gradient without a bias");
            check(&format!("backward_params weight alone {what}"), &gw, &want, case.n * oh * ow);
        }
    }
}

#[test]
fn gpu_conv2d_vjp_is_the_transpose_of_the_jvp() {
    // <gy, J [dx, dw, db]> = <J^T gy, [dx, dw, db]>, all on the GPU.
    for dev in test_devices() {
        let mut rng = Rng::new(24);
        for case in CASES {
            let t = |rng: &mut Rng, s: &[usize]| rand_tensor(&dev, rng, s).0;
            let (x, dx, w, dw) =
                (t(&mut rng, &case.x()), t(&mut rng, &case.x()), t(&mut rng, &case.wt()), t(&mut rng, &case.wt()));
            let (b, db, gy) = (t(&mut rng, &[case.o]), t(&mut rng, &[case.o]), t(&mut rng, &case.y()));
            let (_, dy) = conv2d_jvp(&x, Some(&dx), &w, &dw, Some((&b, &db)), case.g(), false).unwrap();
            let lhs = dot(&gy, &dy);
            let rhs = dot(&conv2d_backward_data(&gy, &w, &case.x(), case.g()).unwrap(), &dx)
                + dot(&conv2d_backward_weight(&x, &gy, &case.wt(), case.g()).unwrap(), &dw)
                + dot(&conv2d_backward_bias(&gy).unwrap(), &db);
            assert_near(&format!("{case:?}"), lhs, rhs, 1e-4);
        }
    }
}

#[test]
fn conv2d_on_large_activations_matches_cpu_reference() {
    // N = 200, C = 64, 32 x 32 activations: 13 M elements, more than 65535 workgroups' worth of
    // per-element invocations. Few output channels keep the reference fast.
    for dev in test_devices() {
        let mut rng = Rng::new(25);
        let case = Case::new(200, 64, (32, 32), 2, (3, 3), 1, 1);
        let (x, xc) = pair(&dev, &mut rng, &case.x());
        let (w, wc) = pair(&dev, &mut rng, &case.wt());
        let got = conv2d(&x, &w, None, case.g(), false).unwrap();
        let want = conv2d(&xc, &wc, None, case.g(), false).unwrap();
        check("large conv2d", &got, &want, 64 * 9);
        let (gy, gyc) = pair(&dev, &mut rng, &case.y());
        let got = conv2d_backward_data(&gy, &w, &case.x(), case.g()).unwrap();
        let want = conv2d_backward_data(&gyc, &wc, &case.x(), case.g()).unwrap();
        check("large conv2d_backward_data", &got, &want, 2 * 9);
    }
}

#[test]
fn conv2d_shape_errors_name_both_shapes() {
    let dev = test_device().unwrap_or(Device::Reference);
    let z = |s: &[usize]| Tensor::zeros(&dev, s).unwrap();
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    let msg = |r: geopath::Result<Tensor>| r.unwrap_err().to_string();
    let e = msg(conv2d(&z(&[2, 3, 7, 7]), &z(&[5, 4, 3, 3]), None, g, false));
    assert!(e.contains("[2, 3, 7, 7]") && e.contains("[5, 4, 3, 3]"), "{e}");
    let e = msg(conv2d(&z(&[3, 7, 7]), &z(&[5, 3, 3, 3]), None, g, false));
    assert!(e.contains("[3, 7, 7]") && e.contains("[5, 3, 3, 3]"), "{e}");
    let e = msg(conv2d(&z(&[1, 3, 2, 2]), &z(&[5, 3, 7, 7]), None, g, false));
    assert!(e.contains("[1, 3, 2, 2]") && e.contains("[5, 3, 7, 7]"), "{e}");
    let e = msg(conv2d(&z(&[1, 3, 4, 4]), &z(&[5, 3, 3, 3]), Some(&z(&[4])), g, false));
    assert!(e.contains("[4]") && e.contains("[5, 3, 3, 3]"), "{e}");
    assert!(conv2d(&z(&[1, 3, 4, 4]), &z(&[5, 3, 3, 3]), None, Conv2dGeometry { stride: 0, pad: 0 }, false).is_err());
    let e = msg(conv2d_backward_data(&z(&[1, 5, 3, 3]), &z(&[5, 3, 3, 3]), &[1, 3, 4, 4], g));
    assert!(e.contains("[1, 5, 3, 3]") && e.contains("[1, 5, 4, 4]"), "{e}");
    let e = msg(conv2d_backward_weight(&z(&[1, 3, 4, 4]), &z(&[1, 6, 4, 4]), &[5, 3, 3, 3], g));
    assert!(e.contains("[1, 6, 4, 4]") && e.contains("[1, 5, 4, 4]"), "{e}");
    let e = msg(conv2d_backward_bias(&z(&[5, 4])));
    assert!(e.contains("[5, 4]"), "{e}");
    let e = conv2d_jvp(&z(&[1, 3, 4, 4]), None, &z(&[5, 3, 3, 3]), &z(&[5, 3, 1, 1]), None, g, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[5, 3, 1, 1]") && e.contains("[5, 3, 3, 3]"), "{e}");
    let e =
        conv2d_jvp(&z(&[1, 3, 4, 4]), Some(&z(&[1, 3, 4, 5])), &z(&[5, 3, 3, 3]), &z(&[5, 3, 3, 3]), None, g, false)
            .unwrap_err()
            .to_string();
    assert!(e.contains("[1, 3, 4, 5]") && e.contains("[1, 3, 4, 4]"), "{e}");
}

#[test]
fn conv_tile_specialisations_validate() {
    let validate = |what: String, src: String| {
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    };
    for ot in [4, 8, 16] {
        for px4 in [1, 2, 4] {
            let spec = [("OT", ot), ("PX4", px4)];
            let src = geopath::kernels::specialised_source("conv2d_3x3", &spec);
            validate(format!("conv2d_3x3 {spec:?}"), src);
        }
    }
    let spec = [("BW_OT", 8), ("BW_CT", 8)];
    validate(format!("conv2d {spec:?}"), geopath::kernels::specialised_source("conv2d", &spec));
}

#[test]
fn conv2d_with_an_empty_batch_gives_empty_outputs_and_zero_gradients() {
    let mut devices = vec![Device::Reference];
    devices.extend(test_device());
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    for dev in &devices {
        let z = |s: &[usize]| Tensor::zeros(dev, s).unwrap();
        let w = Tensor::full(dev, &[5, 3, 3, 3], 1.0).unwrap();
        let (x, gy) = (z(&[0, 3, 7, 7]), z(&[0, 5, 7, 7]));
        assert_eq!(conv2d(&x, &w, None, g, true).unwrap().shape(), [0, 5, 7, 7]);
        let (y, dy) = conv2d_jvp(&x, Some(&x), &w, &w, None, g, false).unwrap();
        assert_eq!((y.numel(), dy.numel()), (0, 0));
        assert_eq!(conv2d_backward_data(&gy, &w, &[0, 3, 7, 7], g).unwrap().numel(), 0);
        let gw = conv2d_backward_weight(&x, &gy, &[5, 3, 3, 3], g).unwrap();
        assert_eq!(gw.to_vec().unwrap(), vec![0.0; 135], "{dev:?}");
        assert_eq!(conv2d_backward_bias(&gy).unwrap().to_vec().unwrap(), vec![0.0; 5], "{dev:?}");
    }
}

/// Geometries large enough (at least 2^18 multiply-adds) for the lowering to matmul-style
/// products on software adapters, with sizes that are not multiples of 4; each comment names
/// the paths it takes on lavapipe.
const LOWERED_CASES: &[Case] = &[
    // Stride 2: every pass lowered, backward data through the col2im gather.
    Case::new(6, 10, (17, 15), 7, (3, 3), 2, 1),
    // 5x5 stride 1: lowered forward; backward data as the lowered flipped convolution.
    Case::new(4, 6, (12, 10), 9, (5, 5), 1, 2),
    // 3x3 fast geometry, many patch rows, 7 x 7 images: lowered forward, direct JVP.
    Case::new(7, 16, (7, 7), 6, (3, 3), 1, 1),
    // 4 x 4 images: lowered forward and JVP, 10 output channels.
    Case::new(6, 32, (4, 4), 10, (3, 3), 1, 1),
    // Non-square kernel: backward data through col2im.
    Case::new(8, 12, (20, 18), 5, (2, 3), 1, 1),
];

/// Geometries whose patch matrices exceed one 32 MiB batch chunk, so the lowering runs over
/// several chunks of images (and the split-K weight gradient over partial sums of each).
const CHUNKED_CASES: &[Case] = &[
    // 153 patch rows x 70 images of 29 x 29: chunks of 63 images.
    Case::new(70, 17, (31, 31), 5, (3, 3), 1, 0),
    // Stride 2, 576 patch rows x 60 images of 16 x 16: chunks of 56; col2im per chunk.
    Case::new(60, 64, (31, 31), 5, (3, 3), 2, 1),
];

#[test]
fn lowered_and_chunked_convolutions_match_cpu_reference() {
    let Some(dev) = test_device() else { return };
    let mut rng = Rng::new(26);
    for case in LOWERED_CASES.iter().chain(CHUNKED_CASES) {
        let what = format!("{case:?}");
        let (x, xc) = pair(&dev, &mut rng, &case.x());
        let (dx, dxc) = pair(&dev, &mut rng, &case.x());
        let (w, wc) = pair(&dev, &mut rng, &case.wt());
        let (dw, dwc) = pair(&dev, &mut rng, &case.wt());
        let (b, bc) = pair(&dev, &mut rng, &[case.o]);
        let (db, dbc) = pair(&dev, &mut rng, &[case.o]);
        let (gy, gyc) = pair(&dev, &mut rng, &case.y());
        let len = case.c * case.kh * case.kw;
        for (bias, relu) in [(true, true), (false, false)] {
            let got = conv2d(&x, &w, bias.then_some(&b), case.g(), relu).unwrap();
            let want = conv2d(&xc, &wc, bias.then_some(&bc), case.g(), relu).unwrap();
            check(&format!("conv2d {what} bias={bias} relu={relu}"), &got, &want, len);
        }
        for (has_dx, bias, relu) in [(true, true, true), (false, false, false)] {
            let (y, dy) =
                conv2d_jvp(&x, has_dx.then_some(&dx), &w, &dw, bias.then_some((&b, &db)), case.g(), relu).unwrap();
            let (yc, dyc) =
                conv2d_jvp(&xc, has_dx.then_some(&dxc), &wc, &dwc, bias.then_some((&bc, &dbc)), case.g(), relu)
                    .unwrap();
            let w = format!("conv2d_jvp {what} dx={has_dx} bias={bias} relu={relu}");
            check(&w, &y, &yc, 2 * len);
            check(&w, &dy, &dyc, 2 * len);
        }
        let [_, _, oh, ow] = case.y();
        let got = conv2d_backward_data(&gy, &w, &case.x(), case.g()).unwrap();
        let want = conv2d_backward_data(&gyc, &wc, &case.x(), case.g()).unwrap();
        check(&format!("backward_data {what}"), &got, &want, case.o * case.kh * case.kw);
        let got = conv2d_backward_weight(&x, &gy, &case.wt(), case.g()).unwrap();
        let want = conv2d_backward_weight(&xc, &gyc, &case.wt(), case.g()).unwrap();
        check(&format!("backward_weight {what}"), &got, &want, case.n * oh * ow);
    }
}
