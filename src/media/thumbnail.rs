//! Thumbnails of JPEG, PNG, GIF and WebP images, made on first request and cached on disk
//! beside the content (`media/thumbnails/<hash>/<w>x<h>-<method>[-animated].<ext>`).
//!
//! Sizes: with `media.dynamic_thumbnails` off, a request snaps to the smallest standard size
//! (the spec's suggested 32x32 crop, 96x96 crop, 320x240, 640x480, 800x600 scale) that covers
//! it, so the cache holds a few files per image; a request no standard size covers is made as
//! asked. Images are never upscaled. `animated=true` on an animated GIF or WebP gives an
//! animated GIF; otherwise the first frame is used.

use std::{io::Cursor, path::PathBuf};

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits,
    RgbaImage,
    codecs::{
        gif::{GifDecoder, GifEncoder, Repeat},
        jpeg::JpegEncoder,
        webp::WebPDecoder,
    },
    imageops,
};

use super::{Media, media_root, store};
use crate::{
    error::{Error, Result},
    services::Services,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Crop,
    Scale,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// A thumbnail ready to serve.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub path: PathBuf,
    pub content_type: &'static str,
    pub size: u64,
}

/// Content types thumbnails are made of.
const THUMBNAILABLE: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];
/// Standard sizes (see module docs).
const STANDARD: &[(u32, u32, Method)] = &[
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];
/// Largest thumbnail side produced.
const MAX_SIDE: u32 = 2048;
/// Sources larger than this (either side) are not decoded.
const MAX_SOURCE_SIDE: u32 = 12_000;
/// Memory a decoder may use.
const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;
/// Animated thumbnails: at most this many frames, and this many source pixels in all.
const MAX_FRAMES: usize = 300;
const MAX_ANIMATION_PIXELS: u64 = 60_000_000;

/// Thumbnails being made at once (per process).
static THUMBNAILERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The extensions a cached thumbnail may have, and the type each is served as.
const OUTPUTS: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("gif", "image/gif"),
];

fn cannot_thumbnail() -> Error {
    Error::unknown("Cannot generate thumbnails for the requested content")
}

/// The size and method a request is served with.
pub fn choose_size(width: u32, height: u32, method: Method, dynamic: bool) -> (u32, u32) {
    let (w, h) = (width.min(MAX_SIDE), height.min(MAX_SIDE));
    if dynamic {
        return (w, h);
    }
    STANDARD
        .iter()
        .filter(|(sw, sh, m)| *m == method && *sw >= w && *sh >= h)
        // A crop must keep the requested aspect ratio.
        .find(|(sw, sh, _)| {
            method == Method::Scale
                || u64::from(*sw) * u64::from(h) == u64::from(*sh) * u64::from(w)
        })
        .map(|(sw, sh, _)| (*sw, *sh))
        .unwrap_or((w, h))
}

/// A thumbnail of `media`, from the cache or made now.
pub async fn thumbnail(
    s: &Services,
    media: &Media,
    width: u32,
    height: u32,
    method: Method,
    animated: bool,
) -> Result<Thumbnail> {
    if width == 0 || height == 0 {
        return Err(Error::invalid_param("width and height must be positive"));
    }
    let essence = media.served_type().split(';').next().unwrap_or("").trim();
    if !THUMBNAILABLE.contains(&essence) {
        return Err(cannot_thumbnail());
    }
    let (w, h) = choose_size(width, height, method, s.config.media.dynamic_thumbnails);
    let animated = animated && matches!(essence, "image/gif" | "image/webp");
    let dir = store::thumbnail_dir(&media_root(s), &media.sha256)?;
    let stem = format!(
        "{w}x{h}-{}{}",
        method.as_str(),
        if animated { "-animated" } else { "" }
    );
    for (ext, content_type) in OUTPUTS {
        let path = dir.join(format!("{stem}.{ext}"));
        if let Ok(meta) = tokio::fs::metadata(&path).await {
            return Ok(Thumbnail {
                path,
                content_type,
                size: meta.len(),
            });
        }
    }

    // Decoding may take a few hundred MiB and a core: bound how many run at once.
    let _permit = THUMBNAILERS.acquire().await.map_err(Error::internal)?;
    let source = media.path.clone();
    let (bytes, ext, content_type) = tokio::task::spawn_blocking(move || {
        let data = std::fs::read(&source)
            .map_err(|e| Error::internal(format!("cannot read {}: {e}", source.display())))?;
        make(&data, w, h, method, animated)
    })
    .await
    .map_err(Error::internal)??;
    let path = dir.join(format!("{stem}.{ext}"));
    store::write_cache_file(&media_root(s), &path, &bytes).await?;
    Ok(Thumbnail {
        path,
        content_type,
        size: bytes.len() as u64,
    })
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SOURCE_SIDE);
    l.max_image_height = Some(MAX_SOURCE_SIDE);
    l.max_alloc = Some(MAX_DECODE_ALLOC);
    l
}

fn decode_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(_) => Error::too_large("The image is too large to thumbnail"),
        _ => cannot_thumbnail(),
    }
}

/// The output geometry: for a crop, the region of the source to keep and the size to scale it
/// to; for a scale, the whole source fitted within the box. Never larger than the source.
fn geometry(
    ow: u32,
    oh: u32,
    w: u32,
    h: u32,
    method: Method,
) -> ((u32, u32, u32, u32), (u32, u32)) {
    match method {
        Method::Scale => {
            if ow <= w && oh <= h {
                return ((0, 0, ow, oh), (ow, oh));
            }
            let ratio = (f64::from(w) / f64::from(ow)).min(f64::from(h) / f64::from(oh));
            let tw = ((f64::from(ow) * ratio).round() as u32).clamp(1, w);
            let th = ((f64::from(oh) * ratio).round() as u32).clamp(1, h);
            ((0, 0, ow, oh), (tw, th))
        }
        Method::Crop => {
            // The largest region of the source with the requested aspect ratio, centred.
            let (cw, ch) = if u64::from(ow) * u64::from(h) > u64::from(oh) * u64::from(w) {
                (
                    ((u64::from(oh) * u64::from(w)) / u64::from(h)).max(1) as u32,
                    oh,
                )
            } else {
                (
                    ow,
                    ((u64::from(ow) * u64::from(h)) / u64::from(w)).max(1) as u32,
                )
            };
            let (cw, ch) = (cw.min(ow), ch.min(oh));
            let region = ((ow - cw) / 2, (oh - ch) / 2, cw, ch);
            // No upscaling: a region smaller than the box is returned at its own size.
            let out = if cw >= w && ch >= h { (w, h) } else { (cw, ch) };
            (region, out)
        }
    }
}

/// Makes a thumbnail: `(bytes, extension, content type)`.
fn make(
    data: &[u8],
    w: u32,
    h: u32,
    method: Method,
    animated: bool,
) -> Result<(Vec<u8>, &'static str, &'static str)> {
    let format = image::guess_format(data).map_err(|_| cannot_thumbnail())?;
    if animated && let Some(out) = make_animated(data, format, w, h, method)? {
        return Ok((out, "gif", "image/gif"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    reader.limits(limits());
    let img = reader.decode().map_err(decode_error)?;
    let ((x, y, cw, ch), (tw, th)) = geometry(img.width(), img.height(), w, h, method);
    let region = if (x, y, cw, ch) == (0, 0, img.width(), img.height()) {
        img
    } else {
        img.crop_imm(x, y, cw, ch)
    };
    let out = if (tw, th) == (region.width(), region.height()) {
        region
    } else {
        region.thumbnail_exact(tw, th)
    };
    let mut buf = Vec::new();
    if format == ImageFormat::Jpeg {
        JpegEncoder::new_with_quality(&mut buf, 85)
            .encode_image(&DynamicImage::ImageRgb8(out.to_rgb8()))
            .map_err(Error::internal)?;
        Ok((buf, "jpg", "image/jpeg"))
    } else {
        let out = if out.has_alpha() {
            DynamicImage::ImageRgba8(out.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(out.to_rgb8())
        };
        out.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
            .map_err(Error::internal)?;
        Ok((buf, "png", "image/png"))
    }
}

/// An animated GIF thumbnail of an animated GIF or WebP; `None` when the source has one frame
/// (or is of another kind), so the caller makes a still one.
fn make_animated(
    data: &[u8],
    format: ImageFormat,
    w: u32,
    h: u32,
    method: Method,
) -> Result<Option<Vec<u8>>> {
    let frames: Vec<Frame> = match format {
        ImageFormat::Gif => {
            let mut d = GifDecoder::new(Cursor::new(data)).map_err(decode_error)?;
            d.set_limits(limits()).map_err(decode_error)?;
            collect_frames(d.dimensions(), d.into_frames())?
        }
        ImageFormat::WebP => {
            let mut d = WebPDecoder::new(Cursor::new(data)).map_err(decode_error)?;
            if !d.has_animation() {
                return Ok(None);
            }
            d.set_limits(limits()).map_err(decode_error)?;
            collect_frames(d.dimensions(), d.into_frames())?
        }
        _ => return Ok(None),
    };
    if frames.len() < 2 {
        return Ok(None);
    }
    let mut buf = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut buf, 10);
        enc.set_repeat(Repeat::Infinite).map_err(Error::internal)?;
        for frame in frames {
            let delay = frame.delay();
            let img: RgbaImage = frame.into_buffer();
            let ((x, y, cw, ch), (tw, th)) = geometry(img.width(), img.height(), w, h, method);
            let region = imageops::crop_imm(&img, x, y, cw, ch).to_image();
            let out = if (tw, th) == (cw, ch) {
                region
            } else {
                imageops::thumbnail(&region, tw, th)
            };
            enc.encode_frame(Frame::from_parts(out, 0, 0, delay))
                .map_err(Error::internal)?;
        }
    }
    Ok(Some(buf))
}

fn collect_frames(dimensions: (u32, u32), frames: image::Frames<'_>) -> Result<Vec<Frame>> {
    let per_frame = u64::from(dimensions.0) * u64::from(dimensions.1);
    let max = (MAX_ANIMATION_PIXELS / per_frame.max(1)).min(MAX_FRAMES as u64) as usize;
    let mut out = Vec::new();
    for frame in frames {
        if out.len() >= max {
            // Too long to animate within bounds: the caller falls back to a still image.
            return Ok(Vec::new());
        }
        out.push(frame.map_err(decode_error)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snaps_to_standard_sizes() {
        assert_eq!(choose_size(30, 30, Method::Crop, false), (32, 32));
        assert_eq!(choose_size(50, 50, Method::Crop, false), (96, 96));
        assert_eq!(choose_size(50, 30, Method::Crop, false), (50, 30));
        assert_eq!(choose_size(300, 200, Method::Scale, false), (320, 240));
        assert_eq!(choose_size(1000, 1000, Method::Scale, false), (1000, 1000));
        assert_eq!(choose_size(30, 30, Method::Crop, true), (30, 30));
    }

    fn gif(frames: u32, w: u32, h: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut buf);
            enc.set_repeat(Repeat::Infinite).unwrap();
            for i in 0..frames {
                let img = RgbaImage::from_pixel(w, h, image::Rgba([(i * 80) as u8, 0, 0, 255]));
                enc.encode_frame(Frame::new(img)).unwrap();
            }
        }
        buf
    }

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        let img = image::load_from_memory(bytes).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn animated_gif_stays_animated_when_asked() {
        let data = gif(3, 40, 20);
        let (out, ext, ct) = make(&data, 20, 20, Method::Scale, true).unwrap();
        assert_eq!((ext, ct), ("gif", "image/gif"));
        let frames = GifDecoder::new(Cursor::new(&out))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].buffer().dimensions(), (20, 10));
        // Not asked: a still PNG of the first frame.
        let (out, ext, _) = make(&data, 20, 20, Method::Scale, false).unwrap();
        assert_eq!(ext, "png");
        assert_eq!(png_size(&out), (20, 10));
        // A single-frame GIF asked animated: still.
        let (_, ext, _) = make(&gif(1, 40, 20), 20, 20, Method::Crop, true).unwrap();
        assert_eq!(ext, "png");
    }

    #[test]
    fn jpeg_stays_jpeg_and_garbage_is_refused() {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3])));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let (out, ext, ct) = make(&jpeg, 32, 32, Method::Crop, false).unwrap();
        assert_eq!((ext, ct), ("jpg", "image/jpeg"));
        assert_eq!(png_size(&out), (32, 32));
        assert!(make(b"not an image", 32, 32, Method::Crop, false).is_err());
    }

    #[test]
    fn never_upscales() {
        assert_eq!(geometry(10, 10, 96, 96, Method::Scale).1, (10, 10));
        assert_eq!(geometry(200, 100, 100, 100, Method::Scale).1, (100, 50));
        let (region, out) = geometry(200, 100, 96, 96, Method::Crop);
        assert_eq!(region, (50, 0, 100, 100));
        assert_eq!(out, (96, 96));
        let (region, out) = geometry(40, 20, 96, 96, Method::Crop);
        assert_eq!(region, (10, 0, 20, 20));
        assert_eq!(out, (20, 20));
    }
}
