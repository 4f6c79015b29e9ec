#![no_main]
//! PGM pictures (a pairing QR code's image file, the synthetic camera's
//! scene) on arbitrary input: never panic, never allocate past the header's
//! checked size, and whatever parses writes back to the same picture.
use kodama_media::pgm::GreyImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = GreyImage::from_pgm(data) {
        assert_eq!(image.pixels.len(), (image.width * image.height) as usize);
        assert_eq!(GreyImage::from_pgm(&image.to_pgm()).as_ref(), Ok(&image));
        let fitted = image.fit_within(320, 240);
        assert!(fitted.width <= 320 && fitted.height <= 240);
        assert_eq!(fitted.pixels.len(), (fitted.width * fitted.height) as usize);
    }
});
