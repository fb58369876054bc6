//! SigLIP preprocessing: resize to exactly `size {height, width}` without a crop, mean and std
//! 0.5, against values computed by transformers' `SiglipImageProcessorPil`.

use image::{DynamicImage, RgbImage, RgbaImage};
use lvlmscope::processing::{ImageMode, ImageProcessor, ProcessorKind, ResizeTarget};

/// llava-hf/llava-interleave-qwen-0.5b-hf's preprocessor_config.json, with the size shrunk
/// from 384×384 to 4×3 so the expected values fit in this file.
const INTERLEAVE_SHAPED: &str = r#"{
  "do_convert_rgb": null,
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.5, 0.5, 0.5],
  "image_processor_type": "SiglipImageProcessor",
  "image_std": [0.5, 0.5, 0.5],
  "processor_class": "LlavaProcessor",
  "resample": 3,
  "rescale_factor": 0.00392156862745098,
  "size": {"height": 4, "width": 3}
}"#;

/// A 7×5 test picture whose every pixel differs.
fn picture() -> RgbImage {
    RgbImage::from_fn(7, 5, |x, y| {
        image::Rgb([
            ((x * 37 + y * 11) % 256) as u8,
            ((y * 53 + x * 7) % 256) as u8,
            ((x * y * 19 + 40) % 256) as u8,
        ])
    })
}

/// `SiglipImageProcessorPil(size={"height": 4, "width": 3}, resample=3)(picture())`, from
/// transformers 5.24 (float32, channel-major).
const EXPECTED: [f32; 36] = [
    -0.77254903,
    -0.11372548,
    0.54509807,
    -0.67058825,
    -0.011764705,
    0.64705884,
    -0.56078434,
    0.09803927,
    0.78039217,
    -0.4588235,
    0.254902,
    0.23921573,
    -0.90588236,
    -0.78039217,
    -0.654902,
    -0.3960784,
    -0.27058822,
    -0.14509803,
    0.13725495,
    0.26274514,
    0.38823533,
    0.64705884,
    0.77254903,
    0.8980392,
    -0.67058825,
    -0.6313726,
    -0.5372549,
    -0.54509807,
    -0.019607842,
    0.16078436,
    -0.36470586,
    0.19215691,
    -0.2235294,
    -0.19215685,
    -0.26274508,
    0.20784318,
];

#[test]
fn siglip_config_parses_with_its_own_defaults() {
    let p = ImageProcessor::from_json(INTERLEAVE_SHAPED).unwrap();
    let c = p.config();
    assert_eq!(c.kind, ProcessorKind::Siglip);
    assert_eq!(
        c.size,
        ResizeTarget::Exact {
            height: 4,
            width: 3
        }
    );
    assert!(!c.do_center_crop, "SigLIP never crops");
    assert!(c.do_convert_rgb, "null takes the class default");
    assert_eq!(p.output_size(), (4, 3));
    // Only the type named: every other field from SiglipImageProcessor's defaults.
    let p = ImageProcessor::from_json(r#"{"image_processor_type": "SiglipImageProcessorFast"}"#)
        .unwrap();
    let c = p.config();
    assert_eq!((c.image_mean, c.image_std), ([0.5; 3], [0.5; 3]));
    assert_eq!(p.output_size(), (224, 224));
    assert_eq!(p.pad_color(), [127, 127, 127]);
    // CLIP's defaults are unchanged when no type is named.
    let clip = ImageProcessor::from_json("{}").unwrap();
    assert_eq!(clip.config().kind, ProcessorKind::Clip);
    assert!(clip.config().do_center_crop);
}

#[test]
fn siglip_pixels_equal_transformers() {
    let p = ImageProcessor::from_json(INTERLEAVE_SHAPED).unwrap();
    let px = p
        .preprocess(&DynamicImage::ImageRgb8(picture()), ImageMode::Default)
        .unwrap();
    assert_eq!(px.shape, [3, 4, 3]);
    let worst = px
        .data
        .iter()
        .zip(EXPECTED)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "max |diff| {worst}");
}

#[test]
fn siglip_composites_transparency_on_white() {
    // The same picture with alpha 128: transformers' convert_to_rgb composites it on white.
    let rgb = picture();
    let rgba = RgbaImage::from_fn(7, 5, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], 128])
    });
    let p = ImageProcessor::from_json(INTERLEAVE_SHAPED).unwrap();
    let px = p
        .preprocess(&DynamicImage::ImageRgba8(rgba), ImageMode::Default)
        .unwrap();
    let expected = [
        0.105882406,
        0.4431373,
        0.77254903,
        0.16078436,
        0.4901961,
        0.827451,
    ];
    for (a, b) in px.data.iter().zip(expected) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
}

#[test]
fn siglip_modes_keep_the_tower_size() {
    let p = ImageProcessor::from_json(INTERLEAVE_SHAPED).unwrap();
    let img = DynamicImage::ImageRgb8(picture());
    for mode in ImageMode::ALL {
        let px = p.preprocess(&img, mode).unwrap();
        assert_eq!(px.shape, [3, 4, 3], "{mode}");
    }
}
