//! How the products see one convolution's images ([`Plan`]): `stride²` phase planes of the
//! padded image, in which each tap's window is one contiguous run.

use super::*;

/// How the products see one convolution's images: as `stride²` phase planes of the padded
/// image (phase `(py, px)` holds the padded pixels `(Y·s + py, X·s + px)`), in which every tap's
/// window over the output is one contiguous run when the output is computed `ws` wide (the
/// extra columns are cropped). For stride 1 the one phase is the padded image itself.
pub(super) struct Plan {
    pub(super) g: ConvGeom,
    /// Columns of one image's product: `h_out × ws`.
    pub(super) n: usize,
    /// Width of a phase plane, and of an output row in the product's columns.
    pub(super) ws: usize,
    /// Height of a phase plane.
    pub(super) hs: usize,
    /// Where each row of the column matrix, `(c_in, ky, kx)`, starts in the phase planes.
    pub(super) offs: Vec<usize>,
}

impl Plan {
    pub(super) fn new(g: &ConvGeom) -> Plan {
        let s = g.stride;
        let (hs, ws) = (
            (g.h + 2 * g.padding).div_ceil(s),
            (g.w + 2 * g.padding).div_ceil(s),
        );
        let taps = g.k * g.k;
        let offs = (0..g.c_in * taps)
            .map(|r| {
                let (ci, ky, kx) = (r / taps, r % taps / g.k, r % g.k);
                let (oy, ox) = (ky * g.dilation, kx * g.dilation);
                let phase = (oy % s) * s + ox % s;
                (phase * g.c_in + ci) * hs * ws + (oy / s) * ws + ox / s
            })
            .collect();
        Plan {
            g: *g,
            n: g.h_out() * ws,
            ws,
            hs,
            offs,
        }
    }

    /// A 1×1 stride-1 convolution without padding: the image is its own phase plane.
    pub(super) fn pointwise(&self) -> bool {
        self.g.k == 1 && self.g.stride == 1 && self.g.padding == 0
    }

    /// Length of one image's phase planes, with room for the last taps' runs.
    pub(super) fn src_len(&self) -> usize {
        let planes = self.g.stride * self.g.stride * self.g.c_in * self.hs * self.ws;
        planes.max(self.offs.iter().max().map_or(0, |&o| o + self.n))
    }

    /// Calls `f(first, at, count)` for every run of an image's pixels that lands contiguously
    /// in its phase planes: pixels `first, first + s, …` (`count` of them, indices into the
    /// image) at `at, at + 1, …` of the planes. Phases no tap reads (a 1×1 strided
    /// convolution reads one) are skipped.
    pub(super) fn runs(&self, mut f: impl FnMut(usize, usize, usize)) {
        let g = &self.g;
        let (s, p, plane) = (g.stride, g.padding, self.hs * self.ws);
        let read: Vec<bool> = (0..s)
            .map(|r| (0..g.k).any(|t| t * g.dilation % s == r))
            .collect();
        for c in 0..g.c_in {
            for y in 0..g.h {
                let yy = y + p;
                let py = yy % s;
                if !read[py] {
                    continue;
                }
                let row = (c * g.h + y) * g.w;
                // Pixel x lands in phase (py, (x + p) % s), column (x + p) / s: the pixels
                // j, j + s, … of phase (j + p) % s start at column (j + p) / s.
                for j in 0..s.min(g.w) {
                    let px = (j + p) % s;
                    if read[px] {
                        let at = ((py * s + px) * g.c_in + c) * plane + yy / s * self.ws;
                        f(row + j, at + (j + p) / s, (g.w - j).div_ceil(s));
                    }
                }
            }
        }
    }

    /// Writes image `x`'s phase planes into `src` (whose padding is zero and stays so).
    pub(super) fn load(&self, x: &[f32], src: &mut [f32]) {
        let s = self.g.stride;
        self.runs(|first, at, count| {
            let to = &mut src[at..at + count];
            if s == 1 {
                to.copy_from_slice(&x[first..first + count]);
            } else {
                to.iter_mut()
                    .zip(x[first..].iter().step_by(s))
                    .for_each(|(d, &v)| *d = v);
            }
        });
    }

    /// Adds the image parts of phase planes `src` into image gradient `dx` (the transpose of
    /// [`Plan::load`]), and clears `src`.
    pub(super) fn unload(&self, src: &mut [f32], dx: &mut [f32]) {
        let s = self.g.stride;
        self.runs(|first, at, count| {
            let from = &src[at..at + count];
            dx[first..]
                .iter_mut()
                .step_by(s)
                .zip(from)
                .for_each(|(d, &v)| *d += v);
        });
        src.fill(0.0);
    }

    /// The parts of a [`multiply`] for `count` images whose phase planes lie `src_len()`
    /// apart, into outputs `img_out` apart.
    pub(super) fn images(&self, count: usize, img_out: usize) -> Vec<Image> {
        let len = self.src_len();
        (0..count)
            .map(|i| Image {
                from: i * len,
                to: i * img_out,
                rows: self.g.h_out(),
                w: self.g.w_out(),
                ws: self.ws,
            })
            .collect()
    }

    /// Images whose weight gradients are summed in one pass: enough columns for the sums'
    /// final reductions not to matter.
    pub(super) fn per_block(&self) -> usize {
        2048usize
            .div_ceil(self.n.max(1))
            .clamp(1, images_per_task(self.g.batch))
    }
}
