//! The live lab trains its series' autoencoders on a background thread
//! (`train_in_background`): a series reaching its training point must not stall the others,
//! a full queue only delays a series, and every series gets its model. Its own test binary,
//! because the setting is process-wide (the library's other tests train inline).

use fieldlab_detect::autoencoder::{train_in_background, OnlineAutoencoder, OnlineConfig};
use fieldlab_detect::Detector;
use std::time::{Duration, Instant};

fn value(i: usize, phase: usize) -> f64 {
    ((i + phase) as f64 / 24.0 * std::f64::consts::TAU).sin()
}

#[test]
fn series_train_in_the_background_one_after_another_and_all_get_a_model() {
    // One thread, room for one waiting series: four series at once overflow it.
    train_in_background(1, 1);
    let mut ds: Vec<OnlineAutoencoder> = (0..4)
        .map(|_| {
            OnlineAutoencoder::new(OnlineConfig {
                epochs: 2,
                ..OnlineConfig::default()
            })
        })
        .collect();
    let mut i = 0;
    // The training data (600 readings), then the reading that asks for the model.
    while i <= 600 {
        for (k, d) in ds.iter_mut().enumerate() {
            assert_eq!(d.score(i as i64 * 1000, value(i, k)), 0.0, "untrained");
        }
        i += 1;
    }
    // The call that handed the training over returned at once: nobody has a model yet.
    assert!(ds.iter().all(|d| !d.trained()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ds.iter().all(|d| d.trained()) {
        assert!(Instant::now() < deadline, "a series never got its model");
        std::thread::sleep(Duration::from_millis(20));
        for (k, d) in ds.iter_mut().enumerate() {
            d.score(i as i64 * 1000, value(i, k));
        }
        i += 1;
    }
    // Every model scores: an ordinary window low, a broken one high.
    for (k, d) in ds.iter_mut().enumerate() {
        let mut usual = 0.0f64;
        for _ in 0..30 {
            usual = usual.max(d.score(i as i64 * 1000, value(i, k)));
            i += 1;
        }
        let odd = d.score(i as i64 * 1000, 8.0);
        assert!(
            odd > usual && odd > 0.5,
            "series {k}: odd {odd}, usual {usual}"
        );
    }
}
