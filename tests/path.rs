//! The path integrator on small problems where the answer is known.

mod common;
use common::*;
use geopath::geodesic::path::{integrate, Ending, Objective, PathConfig, PathRow, Step, ToPruned, ToTarget};
use geopath::ops::{elementwise as ew, flat};
use geopath::{Device, Tensor};

/// A Euclidean step of length at most `eps` against the gradient (G = I).
fn euclidean(eps: f32) -> impl FnMut(usize, &Tensor, &Tensor) -> geopath::Result<Step> {
    move |_step, _w, g| {
        let n = flat::norm(g)?;
        let scale = -eps.min(n) / n.max(1e-30);
        let theta = ew::scale(scale, g)?;
        let len = flat::norm(&theta)?;
        Ok(Step { theta, metric_sq: len * len })
    }
}

/// The reference, then every device under test.
fn devices() -> Vec<Device> {
    std::iter::once(Device::Reference).chain(common::devices()).collect()
}

#[test]
fn a_path_to_a_target_converges_with_logged_rows_and_euclidean_length() {
    for dev in devices() {
        let w0 = Tensor::from_vec(&dev, &[3], vec![0.0, 0.0, 0.0]).unwrap();
        let target = Tensor::from_vec(&dev, &[3], vec![3.0, 4.0, 0.0]).unwrap();
        let mut obj = ToTarget { target };
        let cfg = PathConfig { steps: 100, stop_below: 1e-6, log_every: 2 };
        let mut logged = Vec::new();
        let r = integrate(w0, None, &mut obj, &mut euclidean(1.0), &cfg, &mut |s, _, row| {
            logged.push((s, row.objective));
            Ok(())
        })
        .unwrap();
        assert_eq!(r.ending, Ending::Converged, "{dev:?}");
        // Distance 5 in steps of 1: five steps, then the objective is 0.
        assert_eq!(r.steps, 5);
        assert_close("endpoint", &r.params.to_vec().unwrap(), &[3.0, 4.0, 0.0], 1e-5, 1e-5);
        let last = r.rows.last().unwrap();
        assert!((last.functional_length - 5.0).abs() < 1e-4, "{}", last.functional_length);
        assert_eq!(logged.iter().map(|l| l.0).collect::<Vec<_>>(), vec![0, 2, 4, 5]);
        assert!((logged[0].1 - 12.5).abs() < 1e-5);
    }
}

#[test]
fn the_pruning_objective_measures_the_distance_to_the_hard_pruned_network() {
    for dev in devices() {
        let w = Tensor::from_vec(&dev, &[6], vec![0.1, -5.0, 0.3, 2.0, -0.2, 4.0]).unwrap();
        let mut obj = ToPruned::new(0.5);
        let (value, grad) = obj.value_grad(&w).unwrap();
        // The three smallest magnitudes (0.1, -0.2, 0.3) are pruned.
        assert!((value - 0.5 * (0.01 + 0.04 + 0.09)).abs() < 1e-6, "{value}");
        assert_close("gradient", &grad.to_vec().unwrap(), &[0.1, 0.0, 0.3, 0.0, -0.2, 0.0], 0.0, 1e-7);
        assert_eq!(obj.project(&w).unwrap().to_vec().unwrap(), vec![0.0, -5.0, 0.0, 2.0, 0.0, 4.0]);
        // A fixed mask keeps its ranking when the weights move.
        obj.fix_mask(&w).unwrap();
        let moved = Tensor::from_vec(&dev, &[6], vec![9.0, -5.0, 0.3, 0.0, -0.2, 4.0]).unwrap();
        assert_eq!(obj.project(&moved).unwrap().to_vec().unwrap(), vec![0.0, -5.0, 0.0, 0.0, 0.0, 4.0]);
    }
}

#[test]
fn a_ramped_pruning_objective_follows_the_cubic_schedule_along_the_path() {
    let dev = Device::Reference;
    let mut obj = ToPruned::gradual(0.8, 4);
    // p_t = 0.8 (1 − (1 − t/4)³): 0, 0.4625, 0.7, 0.7875, then 0.8 from step 4 on.
    let expected = [0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8];
    for (t, e) in expected.iter().enumerate() {
        assert!((obj.fraction_at(t) - e).abs() < 1e-6, "step {t}: {}", obj.fraction_at(t));
    }
    assert!(obj.fix_mask(&Tensor::zeros(&dev, &[4]).unwrap()).is_err(), "no fixed mask with a ramp");
    // Ten weights of magnitudes 1..10; steps that do not move them, so the objective at step t
    // is the half squared norm of the round(10 p_t) smallest: 0, 1+4+9+16 (p 0.4625 → 4 of 10,
    // by the threshold of the ranking), ... as integrate tells the objective each step.
    let w0 = Tensor::from_vec(&dev, &[10], (1..=10).map(|v| v as f32).collect()).unwrap();
    let mut values = Vec::new();
    let cfg = PathConfig { steps: 5, stop_below: 0.0, log_every: 1 };
    let mut still = |_step: usize, _w: &Tensor, g: &Tensor| Ok(Step { theta: ew::scale(0.0, g)?, metric_sq: 0.0 });
    let r = integrate(w0.clone(), None, &mut obj, &mut still, &cfg, &mut |_, _, row| {
        values.push(row.objective);
        Ok(())
    })
    .unwrap();
    assert_eq!(r.steps, 5);
    let half_sq = |k: usize| (1..=k).map(|v| 0.5 * (v * v) as f64).sum::<f64>();
    for (t, v) in values.iter().enumerate() {
        let k = flat::count_zeros(&flat::prune(&w0, flat::magnitude_threshold(&w0, expected[t]).unwrap()).unwrap())
            .unwrap();
        assert!((v - half_sq(k)).abs() < 1e-4, "step {t}: objective {v}, {k} pruned");
    }
    assert_eq!(values[0], 0.0);
    assert!((values[5] - half_sq(8)).abs() < 1e-4, "{values:?}");
    // The hard-pruned result uses the final fraction at any step.
    assert_eq!(flat::count_zeros(&obj.project(&w0).unwrap()).unwrap(), 8);
}

#[test]
fn a_non_finite_step_stops_the_run_with_the_last_good_parameters() {
    let dev = Device::Reference;
    let w0 = Tensor::from_vec(&dev, &[2], vec![0.0, 0.0]).unwrap();
    let mut obj = ToTarget { target: Tensor::from_vec(&dev, &[2], vec![10.0, 0.0]).unwrap() };
    let cfg = PathConfig { steps: 50, stop_below: 0.0, log_every: 1 };
    // Step 3 returns NaN directly; in a second run step 3 overflows the parameters.
    for overflow in [false, true] {
        let mut calls = 0;
        let mut inner = euclidean(1.0);
        let mut rule = |step: usize, w: &Tensor, g: &Tensor| {
            calls += 1;
            let mut s = inner(step, w, g)?;
            if calls == 3 {
                let bad = if overflow { f32::MAX } else { f32::NAN };
                s.theta = Tensor::from_vec(&dev, &[2], vec![bad, bad]).unwrap();
                if overflow {
                    s.theta = ew::scale(4.0, &s.theta)?;
                }
            }
            Ok(s)
        };
        let r = integrate(w0.clone(), None, &mut obj, &mut rule, &cfg, &mut |_, _, _| Ok(())).unwrap();
        assert!(matches!(r.ending, Ending::NonFinite(_)), "{:?}", r.ending);
        assert_eq!(r.steps, 2, "overflow={overflow}");
        assert_close("last good", &r.params.to_vec().unwrap(), &[2.0, 0.0], 1e-6, 1e-6);
    }
}

/// A Euclidean step whose length depends on the step index, as a step rule's batch does: a
/// resumed run that restarted its step count would take other steps.
fn shrinking(eps: f32) -> impl FnMut(usize, &Tensor, &Tensor) -> geopath::Result<Step> {
    move |step, w, g| euclidean(eps / (step + 1) as f32)(step, w, g)
}

#[test]
fn a_resumed_run_continues_exactly_where_it_stopped() {
    let dev = Device::Reference;
    let w0 = Tensor::from_vec(&dev, &[4], vec![1.0, -2.0, 0.5, 3.0]).unwrap();
    let target = Tensor::from_vec(&dev, &[4], vec![-4.0, 6.0, 2.0, 0.0]).unwrap();
    let cfg10 = PathConfig { steps: 10, stop_below: 0.0, log_every: 2 };
    let mut logged_whole = Vec::new();
    let whole = integrate(
        w0.clone(),
        None,
        &mut ToTarget { target: target.clone() },
        &mut shrinking(3.0),
        &cfg10,
        &mut |step, _, _| {
            logged_whole.push(step);
            Ok(())
        },
    )
    .unwrap();
    // Interrupted after 4 steps (a logged point), then resumed from its last row.
    let cfg4 = PathConfig { steps: 4, ..cfg10.clone() };
    let first = integrate(
        w0,
        None,
        &mut ToTarget { target: target.clone() },
        &mut shrinking(3.0),
        &cfg4,
        &mut |_, _, _| Ok(()),
    )
    .unwrap();
    let mut logged_rest = Vec::new();
    let rest = integrate(
        first.params,
        first.rows.last(),
        &mut ToTarget { target },
        &mut shrinking(3.0),
        &cfg10,
        &mut |step, _, _| {
            logged_rest.push(step);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(rest.steps, 10);
    assert_eq!(rest.params.to_vec().unwrap(), whole.params.to_vec().unwrap());
    // The resumed point is not logged again; the rows of both runs are the uninterrupted run's,
    // the step norm and the functional length carried on (seconds aside).
    assert_eq!(logged_whole, vec![0, 2, 4, 6, 8, 10]);
    assert_eq!(logged_rest, vec![6, 8, 10]);
    let untimed =
        |rows: &[PathRow]| -> Vec<PathRow> { rows.iter().map(|r| PathRow { seconds: 0.0, ..r.clone() }).collect() };
    let joined: Vec<PathRow> = first.rows.iter().chain(&rest.rows).cloned().collect();
    assert_eq!(untimed(&joined), untimed(&whole.rows));
    assert!(rest.rows[0].functional_length > first.rows.last().unwrap().functional_length);
    assert!(rest.rows.iter().all(|r| r.seconds >= first.rows.last().unwrap().seconds));
    // Resuming a finished path with no steps left logs nothing and keeps the point.
    let done = integrate(
        whole.params.clone(),
        whole.rows.last(),
        &mut ToTarget { target: Tensor::from_vec(&dev, &[4], vec![-4.0, 6.0, 2.0, 0.0]).unwrap() },
        &mut shrinking(3.0),
        &cfg10,
        &mut |_, _, _| panic!("nothing to log"),
    )
    .unwrap();
    assert_eq!((done.steps, done.rows.len()), (10, 0));
    assert_eq!(done.params.to_vec().unwrap(), whole.params.to_vec().unwrap());
}
