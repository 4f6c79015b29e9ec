//! Greyscale pictures as binary PGM (Netpbm `P5`): the pairing QR code that
//! `kodama-server camera add --qr-image` writes for the owner to print or
//! show on a phone, and the scene the synthetic camera films
//! (`video.synthetic_scene`, test equipment). PGM is the simplest picture
//! format every image viewer and converter reads; 8-bit samples only.

/// The largest side [`decode`] accepts: checked before anything is
/// allocated, so a hostile header cannot ask for gigabytes.
pub const MAX_SIDE: u32 = 8192;

/// An 8-bit greyscale picture, row-major, `width * height` samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Samples, 0 = black, 255 = white.
    pub pixels: Vec<u8>,
}

/// Why bytes are not a usable PGM picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgmError {
    /// Not a binary PGM (`P5`); plain `P2` and other Netpbm kinds included.
    #[error("not a binary PGM picture (it must start with \"P5\"; convert it with e.g. `convert in.png -depth 8 out.pgm`)")]
    NotPgm,
    /// The header ended early or a field is not a number.
    #[error("PGM header: {0}")]
    Header(&'static str),
    /// Width or height is 0 or above [`MAX_SIDE`].
    #[error("PGM size {width}x{height}: each side must be 1..={MAX_SIDE}")]
    Size {
        /// Width in the header.
        width: u64,
        /// Height in the header.
        height: u64,
    },
    /// Samples wider than 8 bits, or a maxval of 0.
    #[error("PGM maxval {0}: only 8-bit pictures (maxval 1..=255) are read")]
    Depth(u64),
    /// Fewer sample bytes than the header promises.
    #[error("PGM truncated: {got} of {want} sample bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the header asks for.
        want: usize,
    },
}

impl GreyImage {
    /// The picture as a binary PGM file.
    pub fn to_pgm(&self) -> Vec<u8> {
        let mut out = format!("P5\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.pixels);
        out
    }

    /// Reads a binary PGM (`P5`, maxval up to 255, `#` comments in the
    /// header). Samples are rescaled to 0..=255; bytes after the picture are
    /// ignored, as Netpbm does for a single image.
    pub fn from_pgm(bytes: &[u8]) -> Result<Self, PgmError> {
        let mut at = 2;
        if bytes.get(..2) != Some(b"P5") {
            return Err(PgmError::NotPgm);
        }
        let width = header_number(bytes, &mut at, "no width")?;
        let height = header_number(bytes, &mut at, "no height")?;
        let maxval = header_number(bytes, &mut at, "no maxval")?;
        // Exactly one whitespace byte separates the header from the samples.
        if !bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            return Err(PgmError::Header("no whitespace after maxval"));
        }
        at += 1;
        let side = 1..=u64::from(MAX_SIDE);
        if !side.contains(&width) || !side.contains(&height) {
            return Err(PgmError::Size { width, height });
        }
        if !(1..=255).contains(&maxval) {
            return Err(PgmError::Depth(maxval));
        }
        let want = (width * height) as usize;
        let samples = &bytes[at..];
        if samples.len() < want {
            return Err(PgmError::Truncated {
                got: samples.len(),
                want,
            });
        }
        let pixels = samples[..want]
            .iter()
            .map(|&s| (u64::from(s.min(maxval as u8)) * 255 / maxval) as u8)
            .collect();
        Ok(Self {
            width: width as u32,
            height: height as u32,
            pixels,
        })
    }

    /// The picture shrunk (nearest neighbour, aspect kept) to fit within
    /// `max_width`×`max_height`; unchanged if it already fits.
    pub fn fit_within(&self, max_width: u32, max_height: u32) -> Self {
        if self.width <= max_width && self.height <= max_height {
            return self.clone();
        }
        // The smaller of the two ratios, as a fraction num/den.
        let (num, den) = if u64::from(max_width) * u64::from(self.height)
            <= u64::from(max_height) * u64::from(self.width)
        {
            (u64::from(max_width), u64::from(self.width))
        } else {
            (u64::from(max_height), u64::from(self.height))
        };
        let scale = |v: u32| ((u64::from(v) * num / den) as u32).max(1);
        let (w, h) = (scale(self.width), scale(self.height));
        let mut pixels = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            let sy = (u64::from(y) * den / num).min(u64::from(self.height) - 1) as usize;
            for x in 0..w {
                let sx = (u64::from(x) * den / num).min(u64::from(self.width) - 1) as usize;
                pixels.push(self.pixels[sy * self.width as usize + sx]);
            }
        }
        Self {
            width: w,
            height: h,
            pixels,
        }
    }
}

/// Skips whitespace and `#` comments, then reads a decimal number.
fn header_number(bytes: &[u8], at: &mut usize, missing: &'static str) -> Result<u64, PgmError> {
    loop {
        match bytes.get(*at) {
            Some(b) if b.is_ascii_whitespace() => *at += 1,
            Some(b'#') => {
                while bytes.get(*at).is_some_and(|&b| b != b'\n') {
                    *at += 1;
                }
            }
            _ => break,
        }
    }
    let start = *at;
    while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
        *at += 1;
        // More digits than any valid field: stop before the number overflows.
        if *at - start > 9 {
            return Err(PgmError::Header("a number is too long"));
        }
    }
    if *at == start {
        return Err(PgmError::Header(missing));
    }
    std::str::from_utf8(&bytes[start..*at])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(PgmError::Header(missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_comments_and_rescales_maxval() {
        let mut file = b"P5\n# made by hand\n2 1 # trailing\n15\n".to_vec();
        file.extend_from_slice(&[0, 15]);
        let image = GreyImage::from_pgm(&file).expect("valid");
        assert_eq!((image.width, image.height), (2, 1));
        assert_eq!(image.pixels, vec![0, 255]);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert_eq!(
            GreyImage::from_pgm(b"P2\n1 1\n255\n0"),
            Err(PgmError::NotPgm)
        );
        assert_eq!(GreyImage::from_pgm(b""), Err(PgmError::NotPgm));
        assert_eq!(
            GreyImage::from_pgm(b"P5\n4 4\n255\n\0\0"),
            Err(PgmError::Truncated { got: 2, want: 16 })
        );
        assert_eq!(
            GreyImage::from_pgm(b"P5\n1 1\n65535\n\0\0"),
            Err(PgmError::Depth(65535))
        );
        assert_eq!(
            GreyImage::from_pgm(b"P5\n0 1\n255\n"),
            Err(PgmError::Size {
                width: 0,
                height: 1
            })
        );
        // A header asking for 10^9 x 10^9 is refused before any allocation.
        assert!(matches!(
            GreyImage::from_pgm(b"P5\n999999999 999999999\n255\n"),
            Err(PgmError::Size { .. })
        ));
        assert_eq!(
            GreyImage::from_pgm(b"P5\n1 x\n255\n\0"),
            Err(PgmError::Header("no height"))
        );
        assert!(GreyImage::from_pgm(b"P5\n1 1\n255")
            .expect_err("no separator")
            .to_string()
            .contains("whitespace"));
    }

    #[test]
    fn fitting_keeps_the_aspect_and_never_grows() {
        let image = GreyImage {
            width: 400,
            height: 200,
            pixels: (0..400 * 200).map(|i| (i % 251) as u8).collect(),
        };
        let fitted = image.fit_within(320, 240);
        assert_eq!((fitted.width, fitted.height), (320, 160));
        assert_eq!(fitted.pixels.len(), 320 * 160);
        assert_eq!(image.fit_within(800, 800), image);
    }

    proptest! {
        #[test]
        fn round_trips(width in 1u32..40, height in 1u32..40, seed in any::<u8>()) {
            let pixels = (0..width * height).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let image = GreyImage { width, height, pixels };
            prop_assert_eq!(GreyImage::from_pgm(&image.to_pgm()), Ok(image));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut file = b"P5 ".to_vec();
            file.extend_from_slice(&bytes);
            if let Ok(image) = GreyImage::from_pgm(&file) {
                prop_assert_eq!(image.pixels.len(), (image.width * image.height) as usize);
            }
            let _ = GreyImage::from_pgm(&bytes);
        }
    }
}
