//! A confusion matrix drawn as a PNG heat map: rows are true classes, columns predictions,
//! each cell shaded by its share of the row (white 0 -> dark blue 1) and labelled with its
//! count; the class names run down the left, numbered to match the column headers (names
//! longer than [`NAME_CHARS`] are cut and end in `...`; the CSV and JSON hold them whole).
//! Text is drawn with the public-domain 8x8 bitmap font of the `font8x8` crate.

use std::path::Path;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

const MARGIN: u32 = 12;
const GLYPH: u32 = 8;
const INK: Rgb<u8> = Rgb([20, 20, 20]);
/// Longest class name drawn in full.
pub const NAME_CHARS: usize = 32;

/// `name` as drawn: at most [`NAME_CHARS`] characters, marked with `...` where cut.
fn shortened(name: &str) -> String {
    if name.chars().count() <= NAME_CHARS {
        return name.to_string();
    }
    let kept: String = name.chars().take(NAME_CHARS - 3).collect();
    format!("{kept}...")
}

fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, scale: u32, color: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::LATIN_FONTS.get(ch))
            .unwrap_or(font8x8::BASIC_FONTS.get('?').expect("ASCII glyph"));
        let x0 = x + i as u32 * GLYPH * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x0 + col * scale + dx, y + row as u32 * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, color);
                        }
                    }
                }
            }
        }
    }
}

fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Renders `confusion[true][predicted]` with `names` and a `title` to an image.
pub fn render(confusion: &[Vec<usize>], names: &[String], title: &str) -> RgbImage {
    let n = confusion.len().max(1) as u32;
    let cell = (720 / n).clamp(14, 64);
    let scale = if cell >= 40 { 2 } else { 1 };
    let row_labels: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{i:>2} {}", shortened(name)))
        .collect();
    let label_w = row_labels
        .iter()
        .map(|l| text_width(l, 1))
        .max()
        .unwrap_or(0)
        + MARGIN;
    let header_h = 3 * GLYPH + 2 * MARGIN;
    let left = MARGIN + label_w;
    let width = (left + n * cell + MARGIN).max(text_width(title, 1) + 2 * MARGIN);
    let height = header_h + n * cell + 2 * MARGIN + GLYPH;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut img, MARGIN, MARGIN / 2, title, 1, INK);
    draw_text(
        &mut img,
        left,
        MARGIN / 2 + GLYPH + 4,
        "predicted ->   (rows: true class)",
        1,
        INK,
    );
    for c in 0..n {
        let label = c.to_string();
        let x = left + c * cell + (cell.saturating_sub(text_width(&label, 1))) / 2;
        draw_text(&mut img, x, header_h - GLYPH - 4, &label, 1, INK);
    }
    for (r, row) in confusion.iter().enumerate() {
        let r = r as u32;
        let total: usize = row.iter().sum();
        let y0 = header_h + r * cell;
        if let Some(label) = row_labels.get(r as usize) {
            draw_text(&mut img, MARGIN, y0 + (cell - GLYPH) / 2, label, 1, INK);
        }
        for (c, &count) in row.iter().enumerate() {
            let c = c as u32;
            let share = if total == 0 {
                0.0
            } else {
                count as f32 / total as f32
            };
            let shade = |lo: f32, hi: f32| (lo + (hi - lo) * share).round() as u8;
            let fill = Rgb([shade(255.0, 8.0), shade(255.0, 48.0), shade(255.0, 107.0)]);
            let x0 = left + c * cell;
            for y in y0..y0 + cell {
                for x in x0..x0 + cell {
                    let border = y == y0 || x == x0;
                    img.put_pixel(x, y, if border { Rgb([200, 200, 200]) } else { fill });
                }
            }
            let text = count.to_string();
            let s = if text_width(&text, scale) + 4 <= cell {
                scale
            } else {
                1
            };
            if text_width(&text, s) + 2 <= cell {
                let color = if share > 0.5 {
                    Rgb([255, 255, 255])
                } else {
                    INK
                };
                let tx = x0 + (cell - text_width(&text, s)) / 2;
                let ty = y0 + (cell - GLYPH * s) / 2;
                draw_text(&mut img, tx, ty, &text, s, color);
            }
        }
    }
    img
}

/// Writes the heat map of `confusion` to a PNG file.
pub fn write_png(
    path: &Path,
    confusion: &[Vec<usize>],
    names: &[String],
    title: &str,
) -> Result<()> {
    render(confusion, names, title)
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.into(),
            reason: format!("cannot write heat map: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_shaded_by_their_share_of_the_row() {
        let img = render(&[vec![3, 1], vec![0, 0]], &["a".into(), "b".into()], "t");
        assert!(img.width() > 100 && img.height() > 100);
        // The darkest pixel is in the first cell (3 of 4), none is in the empty row.
        let blue = |p: &Rgb<u8>| p.0[0] < 100 && p.0[2] > 90;
        assert!(img.pixels().any(blue));
    }

    #[test]
    fn long_names_are_cut_visibly() {
        let exact = "x".repeat(NAME_CHARS);
        assert_eq!(shortened(&exact), exact);
        let long = format!("{exact}y");
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), NAME_CHARS);
        assert!(cut.ends_with("...") && long.starts_with(cut.trim_end_matches('.')));
    }
}
