//! The validation split: which images it holds out, and the refusal of checkpoints trained on
//! them.

use geopath::data::split::{validation_len, VALIDATION_IMAGES};
use geopath::data::{Dataset, Split, SplitRecord};

/// A data set of `n` one-pixel images whose pixel and label are their index.
fn indexed(n: usize) -> Dataset {
    Dataset {
        images: (0..n).map(|i| i as f32).collect(),
        labels: (0..n).map(|i| (i % 10) as u32).collect(),
        channels: 1,
        height: 1,
        width: 1,
        classes: 10,
        name: "indexed".into(),
    }
}

#[test]
fn a_full_training_set_holds_out_its_last_5000_images() {
    for (n, fit) in [(60_000, 55_000), (50_000, 45_000)] {
        let split = Split::of(&indexed(n)).unwrap();
        assert_eq!((split.fit.len(), split.validation.len()), (fit, VALIDATION_IMAGES));
        assert_eq!(split.fit.images.last(), Some(&((fit - 1) as f32)));
        assert_eq!(split.validation.images.first(), Some(&(fit as f32)));
        assert_eq!(split.validation.images.last(), Some(&((n - 1) as f32)));
        assert_eq!(split.record(), SplitRecord { fit, total: n });
    }
    // Small sets (generated test data) hold out their last fifth; too small ones are refused.
    assert_eq!(validation_len(512), 102);
    assert!(Split::of(&indexed(4)).unwrap_err().to_string().contains("too few"));
}

#[test]
fn checkpoints_trained_on_validation_images_are_refused() {
    let split = Split::of(&indexed(60_000)).unwrap();
    SplitRecord::check("a.ckpt", Some("first 55000 of 60000"), &split).unwrap();
    // Trained on fewer images than allowed: still none of the validation ones.
    SplitRecord::check("a.ckpt", Some("first 30000 of 60000"), &split).unwrap();
    let refused = [
        (None, "records no training split"),
        (Some("first 60000 of 60000"), "overlaps the validation"),
        (Some("first 55000 of 50000"), "overlaps the validation"),
        (Some("all of it"), "unreadable"),
    ];
    for (value, why) in refused {
        let e = SplitRecord::check("a.ckpt", value, &split).unwrap_err().to_string();
        assert!(e.contains("a.ckpt") && e.contains(why), "{value:?}: {e}");
        if value.is_some_and(|v| v.starts_with("first")) || value.is_none() {
            assert!(e.contains("geopath train"), "the error names the fix: {e}");
        }
    }
    assert_eq!(SplitRecord::parse(&split.record().to_metadata()), Some(split.record()));
}
