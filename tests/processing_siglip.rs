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
    -0.772_549_03,
    -0.113_725_48,
    0.545_098_07,
    -0.670_588_25,
    -0.011_764_705,
    0.647_058_84,
    -0.560_784_34,
    0.098_039_27,
    0.780_392_17,
    -0.458_823_5,
    0.254_902,
    0.239_215_73,
    -0.905_882_36,
    -0.780_392_17,
    -0.654_901_98,
    -0.396_078_4,
    -0.270_588_22,
    -0.145_098_03,
    0.137_254_95,
    0.262_745_14,
    0.388_235_33,
    0.647_058_84,
    0.772_549_03,
    0.898_039_2,
    -0.670_588_25,
    -0.631_372_57,
    -0.537_254_93,
    -0.545_098_07,
    -0.019_607_842,
    0.160_784_36,
    -0.364_705_86,
    0.192_156_91,
    -0.223_529_4,
    -0.192_156_85,
    -0.262_745_08,
    0.207_843_18,
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
        0.105_882_406,
        0.443_137_29,
        0.772_549_03,
        0.160_784_36,
        0.490_196_1,
        0.827_450_99,
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
