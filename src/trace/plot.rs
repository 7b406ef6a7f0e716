//! `trace plot`: a trace as a heat map, volume offset (y) against time (x),
//! so a person can see what a session read and where a prediction failed.
//!
//! The plane is cut into [`X_BINS`] × [`Y_BINS`] cells; each access adds
//! its bytes to the cells of its time and offset range, per [`Kind`]. A
//! cell takes the colour of the kind with the most bytes in it, darker for
//! more bytes (log scale: a start-up's few reads stay visible next to a
//! scan). Without an overlay the kinds are reads and writes; with one
//! (`--snapshot`, the index replayed by `hints --evaluate`'s rule) reads
//! become hits (prefetched before the read), misses, and waste (prefetched,
//! never read, drawn at the prefetch time). Binning is separate from
//! drawing ([`Heat`]), so what a plot shows is tested without parsing SVG.
//!
//! Rendered with `plotters` (SVG backend only: no font or bitmap
//! libraries to install; the viewer renders the text).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// Time cells: one per ~5 px of an 1200 px wide plot.
pub const X_BINS: usize = 240;
/// Offset cells: one per 5 px of an 800 px tall plot.
pub const Y_BINS: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Read,
    Write,
    Hit,
    Miss,
    Waste,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Read, Kind::Write, Kind::Hit, Kind::Miss, Kind::Waste];

    fn label(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Hit => "hit (prefetched, then read)",
            Kind::Miss => "miss (read, not prefetched)",
            Kind::Waste => "waste (prefetched, never read)",
        }
    }

    /// Full-intensity colour.
    pub fn rgb(self) -> (u8, u8, u8) {
        match self {
            Kind::Read => (31, 119, 180),
            Kind::Write => (148, 52, 160),
            Kind::Hit => (44, 160, 44),
            Kind::Miss => (214, 39, 40),
            Kind::Waste => (255, 127, 14),
        }
    }
}

/// One access (or one block's outcome) to draw.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub t_ns: u64,
    pub offset: u64,
    pub len: u64,
    pub kind: Kind,
}

/// The binned plane: time from 0 to the last access, offsets over the
/// span the accesses touch (a start-up reads a few percent of a volume:
/// over the whole volume it would be a line).
pub struct Heat {
    pub t_max_ns: u64,
    pub volume_size: u64,
    /// The offsets the rows cover.
    pub span: std::ops::Range<u64>,
    /// [x][y] → bytes per kind (index in [`Kind::ALL`])
    cells: Vec<[u64; 5]>,
}

impl Heat {
    pub fn new(accesses: &[Access], volume_size: u64) -> Heat {
        let t_max_ns = accesses.iter().map(|a| a.t_ns).max().unwrap_or(0).max(1);
        let volume_size = volume_size.max(1);
        let lo = accesses.iter().map(|a| a.offset).min().unwrap_or(0);
        let hi = accesses
            .iter()
            .map(|a| a.offset.saturating_add(a.len.max(1)))
            .max()
            .unwrap_or(volume_size)
            .min(volume_size);
        // A twentieth of the span as margin, rounded out to MiB.
        let margin = (hi.saturating_sub(lo) / 20).max(1 << 20);
        let span = (lo.saturating_sub(margin) >> 20 << 20)
            ..(hi + margin)
                .div_ceil(1 << 20)
                .saturating_mul(1 << 20)
                .min(volume_size);
        let span = if span.is_empty() {
            0..volume_size
        } else {
            span
        };
        let mut cells = vec![[0u64; 5]; X_BINS * Y_BINS];
        for a in accesses {
            let x = ((a.t_ns as u128 * X_BINS as u128) / (t_max_ns as u128 + 1)) as usize;
            let end = a.offset.saturating_add(a.len.max(1)).min(span.end);
            if a.offset >= end || a.offset < span.start {
                continue;
            }
            let y0 = Self::y_of(a.offset, &span);
            let y1 = Self::y_of(end - 1, &span);
            let k = Kind::ALL.iter().position(|k| *k == a.kind).unwrap_or(0);
            // Bytes spread over the cells the range covers (the remainder
            // to the first).
            let rows = (y1 - y0 + 1) as u64;
            let (per, rest) = ((end - a.offset) / rows, (end - a.offset) % rows);
            for y in y0..=y1 {
                let extra = if y == y0 { rest } else { 0 };
                cells[x.min(X_BINS - 1) * Y_BINS + y][k] += per + extra;
            }
        }
        Heat {
            t_max_ns,
            volume_size,
            span,
            cells,
        }
    }

    fn y_of(offset: u64, span: &std::ops::Range<u64>) -> usize {
        let len = (span.end - span.start).max(1) as u128;
        ((((offset - span.start) as u128) * Y_BINS as u128 / len) as usize).min(Y_BINS - 1)
    }

    /// The kind with the most bytes in cell (x, y), and those bytes.
    pub fn cell(&self, x: usize, y: usize) -> Option<(Kind, u64)> {
        let c = self.cells.get(x * Y_BINS + y)?;
        let (i, &n) = c.iter().enumerate().max_by_key(|(_, n)| **n)?;
        (n > 0).then_some((Kind::ALL[i], n))
    }

    /// Bytes of `kind` in all cells.
    pub fn total(&self, kind: Kind) -> u64 {
        let k = Kind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
        self.cells.iter().map(|c| c[k]).sum()
    }
}

/// Draws `heat` as an SVG file at `out`, titled `title`.
pub fn render(heat: &Heat, title: &str, out: &Path) -> anyhow::Result<()> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (1200, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let t_max = heat.t_max_ns as f64 / 1e9;
        let mib = (1u64 << 20) as f64;
        let (v_min, v_max) = (heat.span.start as f64 / mib, heat.span.end as f64 / mib);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..t_max, v_min..v_max)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (s)")
            .y_desc("volume offset (MiB)")
            .draw()?;
        let peak = heat
            .cells
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let (dx, dy) = (t_max / X_BINS as f64, (v_max - v_min) / Y_BINS as f64);
        let mut rects = Vec::new();
        for x in 0..X_BINS {
            for y in 0..Y_BINS {
                if let Some((k, n)) = heat.cell(x, y) {
                    // Log scale, from a light tint (one byte) to full colour.
                    let f = 0.25 + 0.75 * ((n as f64).ln_1p() / peak.ln_1p());
                    let (r, g, b) = k.rgb();
                    let mix = |c: u8| (255.0 - (255.0 - c as f64) * f).round() as u8;
                    let x0 = x as f64 * dx;
                    let y0 = v_min + y as f64 * dy;
                    rects.push(Rectangle::new(
                        [(x0, y0), (x0 + dx, y0 + dy)],
                        RGBColor(mix(r), mix(g), mix(b)).filled(),
                    ));
                }
            }
        }
        chart.draw_series(rects)?;
        // The legend: the kinds present.
        for k in Kind::ALL.into_iter().filter(|k| heat.total(*k) > 0) {
            let (r, g, b) = k.rgb();
            let c = RGBColor(r, g, b);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                .label(k.label())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot draw {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_land_in_their_cells_and_the_dominant_kind_wins() {
        let mib = 1 << 20;
        let acc = [
            Access {
                t_ns: 0,
                offset: 0,
                len: 4096,
                kind: Kind::Read,
            },
            Access {
                t_ns: 1_000_000_000,
                offset: 80 * mib,
                len: mib,
                kind: Kind::Write,
            },
            Access {
                t_ns: 1_000_000_000,
                offset: 80 * mib,
                len: 4096,
                kind: Kind::Read,
            },
        ];
        let h = Heat::new(&acc, 160 * mib);
        // The span: 0 to 81 MiB plus a twentieth, rounded up to 86 MiB.
        assert_eq!(h.span, 0..86 * mib);
        assert_eq!(h.cell(0, 0).map(|c| c.0), Some(Kind::Read));
        // The write at 80 MiB: row 80/85 of 160; the last column.
        let row = (80 * Y_BINS) / 86;
        assert_eq!(h.cell(X_BINS - 1, row).map(|c| c.0), Some(Kind::Write));
        assert!(h.cell(5, 5).is_none());
        assert_eq!(h.total(Kind::Write), mib);
    }
}
