//! Motion detector cost per frame, the figure that matters on a Pi Zero 2W.
//!
//! `cargo run --profile bench -p kodama-firmware --example motion_bench`
//! (or with `CARGO_PROFILE_DEV_OPT_LEVEL=3` for a quick optimised build).
//! Prints nanoseconds per frame for an 80x60 plane (the default) and a
//! 320x240 one, with a square walking through the scene.

use std::hint::black_box;
use std::time::Instant;

use kodama_firmware::motion::{MotionConfig, MotionDetector};

fn bench(w: u32, h: u32, frames: u32) {
    let plane = |n: u32| {
        let mut d = vec![90u8; (w * h) as usize];
        let s = h / 3;
        let x0 = (n * 2) % (w - s);
        for y in s..2 * s {
            for x in x0..x0 + s {
                d[(y * w + x) as usize] = 220;
            }
        }
        d
    };
    // Pre-render 64 planes so the loop measures only the detector.
    let planes: Vec<Vec<u8>> = (0..64).map(plane).collect();
    let mut det = MotionDetector::new(MotionConfig::default());
    let mut events = 0u32;
    let start = Instant::now();
    for n in 0..frames {
        let p = &planes[(n % 64) as usize];
        if det
            .push_plane(w, h, black_box(p), u64::from(n) * 100_000)
            .is_some()
        {
            events += 1;
        }
    }
    let ns = start.elapsed().as_nanos() / u128::from(frames);
    println!("motion {w}x{h}: {ns} ns/frame over {frames} frames ({events} events)");
}

fn main() {
    bench(80, 60, 200_000);
    bench(320, 240, 20_000);
}
