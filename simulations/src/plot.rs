//! A plot of the repair windows, as a PNG: one line per policy, the share of repairs done
//! (up) against the hours they took (across, logarithmic from 1 hour to 1 year).

use std::io::Write;

use crate::Summary;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
const MARGIN: u32 = 40;

/// The colours of the lines, in the order of the summaries.
pub const COLOURS: [[u8; 3]; 5] =
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [148, 103, 189], [255, 127, 14]];

/// Writes the plot of `summaries` to `out`.
pub fn repair_windows(summaries: &[Summary], out: impl Write) -> Result<(), png::EncodingError> {
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let mut put = |x: u32, y: u32, rgb: [u8; 3]| {
        if x < WIDTH && y < HEIGHT {
            let at = ((y * WIDTH + x) * 3) as usize;
            pixels[at..at + 3].copy_from_slice(&rgb);
        }
    };
    let (w, h) = (WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN);
    // Axes, and a tick at each decade of hours (1, 10, 100, 1000) and each quarter.
    for x in 0..=w {
        put(MARGIN + x, MARGIN + h, [0, 0, 0]);
    }
    for y in 0..=h {
        put(MARGIN, MARGIN + y, [0, 0, 0]);
    }
    let max_log = (24.0f64 * 365.0).log10();
    for decade in 0..=3 {
        let x = MARGIN + (f64::from(decade) / max_log * f64::from(w)) as u32;
        for y in 0..h {
            if y % 6 < 2 {
                put(x, MARGIN + y, [200, 200, 200]);
            }
        }
    }
    for quarter in 1..=4 {
        let y = MARGIN + h - h * quarter / 4;
        for x in 0..w {
            if x % 6 < 2 {
                put(MARGIN + x, y, [200, 200, 200]);
            }
        }
    }
    for (summary, rgb) in summaries.iter().zip(COLOURS) {
        let n = summary.repairs.len();
        if n == 0 {
            continue;
        }
        let mut last: Option<u32> = None;
        for px in 0..w {
            let hours = 10f64.powf(f64::from(px) / f64::from(w) * max_log);
            let done = summary.repairs.partition_point(|r| *r <= hours) as f64 / n as f64;
            let py = MARGIN + h - (done * f64::from(h)) as u32;
            // A step is drawn whole: from where the line was to where it is.
            let (top, bottom) = last.map_or((py, py), |l| (l.min(py), l.max(py)));
            for y in top.saturating_sub(1)..=bottom {
                put(MARGIN + px, y, rgb);
            }
            last = Some(py);
        }
    }
    let mut encoder = png::Encoder::new(out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()
}
